package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/colibrivm/colibri/agent"
	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/agent/client"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
)

// testAgent is a host served by an agent on a real Unix socket.
type testAgent struct {
	h      *host.Host
	srv    *http.Server
	ln     *agent.Listener
	socket string
	val    *validator
	c      *client.Client
}

func startAgent(t *testing.T, cfg host.Config) *testAgent {
	t.Helper()
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(testenv.SocketDir(t), "agent.sock")
	ln, err := agent.Listen(socket)
	if err != nil {
		h.Close(context.Background())
		t.Fatal(err)
	}
	a := &testAgent{h: h, ln: ln, socket: socket,
		srv: &http.Server{Handler: agent.New(agent.Config{Host: h, Version: "test"}), ReadHeaderTimeout: 10 * time.Second}}
	go a.srv.Serve(ln)
	a.c = client.New(socket, client.WithTransport(func(rt http.RoundTripper) http.RoundTripper {
		a.val = newValidator(t, rt)
		return a.val
	}))
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *testAgent) stop(t *testing.T) {
	if a.h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.h.Close(ctx); err != nil {
		t.Errorf("closing the host: %v", err)
	}
	if err := a.srv.Shutdown(ctx); err != nil {
		t.Errorf("shutting the server down: %v", err)
	}
	a.c.Close()
	a.val.report()
	a.h = nil
}

// raw sends a request and returns the status and the error message.
func (a *testAgent) raw(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	resp, err := a.c.Do(context.Background(), method, path, rd, "application/json")
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

// TestRoutesMatchSpec: every route of the OpenAPI document is served and
// every served route is in the document.
func TestRoutesMatchSpec(t *testing.T) {
	doc := loadSpec(t)
	inDoc := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inDoc[method+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range agent.New(agent.Config{}).Routes() {
		served[r.Method+" "+r.Path] = true
	}
	var missing, extra []string
	for r := range inDoc {
		if !served[r] {
			missing = append(missing, r)
		}
	}
	for r := range served {
		if !inDoc[r] {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("in the OpenAPI document but not served: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("served but not in the OpenAPI document: %v", extra)
	}
	if len(served) < 15 {
		t.Errorf("only %d routes", len(served))
	}
}

// TestAPIWithoutVMs: the routes that need no KVM, the socket's rules,
// /metrics through the Prometheus parser, the event stream, and bad
// requests, each with its status code and message; every request and
// answer checked against the OpenAPI document.
func TestAPIWithoutVMs(t *testing.T) {
	g0 := runtime.NumGoroutine()
	a := startAgent(t, host.Config{Spec: spec.File{Switches: []spec.Switch{{Name: "sw0"}}}, Scheduler: true})
	ctx := context.Background()

	if fi, err := os.Stat(a.socket); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v, mode %v", a.socket, err, fi.Mode())
	}
	if _, err := agent.Listen(a.socket); err == nil || !strings.Contains(err.Error(), "another colibri agent") {
		t.Fatalf("a second agent on the socket: %v", err)
	}
	p, err := a.c.Ping(ctx)
	if err != nil || p.API != api.Version || p.Version != "test" {
		t.Fatalf("ping: %+v %v", p, err)
	}
	if vms, err := a.c.VMs(ctx); err != nil || len(vms) != 0 {
		t.Fatalf("vms: %v %v", vms, err)
	}
	sws, err := a.c.Switches(ctx)
	if err != nil || len(sws) != 1 || sws[0].Name != "sw0" {
		t.Fatalf("switches: %+v %v", sws, err)
	}
	if resp, err := a.c.Do(ctx, "GET", "/openapi.yaml", nil, ""); err != nil || resp.StatusCode != 200 {
		t.Fatalf("openapi.yaml: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != string(api.Spec) {
			t.Fatal("GET /openapi.yaml is not the document")
		}
	}

	// Events: a policy change arrives on the stream.
	events := make(chan api.Event, 16)
	evCtx, evCancel := context.WithCancel(ctx)
	evDone := make(chan error, 1)
	go func() {
		evDone <- a.c.Events(evCtx, func(ev api.Event) bool { events <- ev; return true })
	}()
	time.Sleep(100 * time.Millisecond) // the stream is open
	s, err := a.c.SetSched(ctx, api.SetSched{Policy: "central", Threshold: "1ms"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Policy != "central" || s.Threshold != "1ms" || s.Quantum == "" || !s.Enabled {
		t.Fatalf("after set: %+v", s)
	}
	select {
	case ev := <-events:
		if ev.Type != "policy" || !strings.Contains(ev.Reason, "central") {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no policy event on the stream")
	}
	evCancel()
	<-evDone
	if s, err := a.c.Sched(ctx); err != nil || s.Policy != "central" {
		t.Fatalf("sched: %+v %v", s, err)
	}

	// Metrics parse with Prometheus' own parser.
	body, err := a.c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	for _, name := range []string{"colibri_sched_passes_total", "colibri_sched_policy", "colibri_poller_polls_total", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("metrics lack %s", name)
		}
	}
	if f := fams["colibri_sched_policy"]; f != nil && f.Metric[0].Label[0].GetValue() != "central" {
		t.Errorf("colibri_sched_policy says %v", f.Metric[0].Label)
	}

	big := `{"name": "a", "cmdline": "` + strings.Repeat("x", agent.MaxBody) + `"}`
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"GET", "/nope", "", 404, "no route GET /nope"},
		{"DELETE", "/sched", "", 405, "method not allowed (allowed: GET, PUT)"},
		{"POST", "/vms", "{", 400, "unexpected end of JSON"},
		{"POST", "/vms", "", 400, "empty VM description"},
		{"POST", "/vms", `{"name": "a", "cpu": 1}`, 400, `cpu: unknown key "cpu"`},
		{"POST", "/vms", `{"name": "a", "mem": "12Q"}`, 400, `mem: "12Q": not a size`},
		{"POST", "/vms", `{"name": "a", "cpus": "two"}`, 400, "cpus: want an integer"},
		{"POST", "/vms", `{"name": "Bad"}`, 400, `name: "Bad": use lowercase letters`},
		{"POST", "/vms", `{"name": "a", "kernel": "vmlinux"}`, 400, `kernel: "vmlinux" is a relative path`},
		{"POST", "/vms", `{"name": "a", "disks": [{"path": "d.img"}]}`, 400, `disks[0].path: "d.img" is a relative path`},
		{"POST", "/vms", `{"name": "a", "nics": [{"switch": "sw9"}]}`, 400, `nics[0].switch: no switch named "sw9" (have sw0)`},
		{"POST", "/vms", `{"name": "a", "kernel": "/nonexistent/bzImage"}`, 400, "/nonexistent/bzImage"},
		{"POST", "/vms", `{"name": "a", "on_crash": "dance"}`, 400, `on_crash: "dance": use stop or restart`},
		{"POST", "/vms?start=maybe", `{"name": "a"}`, 400, `start="maybe": want true or false`},
		{"POST", "/vms", big, 413, "request body larger than 1048576 bytes"},
		{"GET", "/vms/nope", "", 404, `VM "nope": no such VM`},
		{"POST", "/vms/nope/pause", "", 404, `VM "nope": no such VM`},
		{"POST", "/vms/nope/stop", `{"force": "yes"}`, 400, "force: want bool"},
		{"POST", "/vms/nope/stop", `{"timeout": "soon"}`, 400, `timeout: "soon" is not a duration`},
		{"DELETE", "/vms/nope?force=perhaps", "", 400, `force="perhaps": want true or false`},
		{"DELETE", "/vms/nope", "", 404, "no such VM"},
		{"PUT", "/sched", `{"policy": "fifo"}`, 400, `unknown scheduling policy "fifo"`},
		{"PUT", "/sched", `{}`, 400, "policy: missing"},
		{"PUT", "/sched", `{"policy": "central", "speed": 3}`, 400, `unknown field "speed"`},
		{"PUT", "/sched", `{"policy": "central", "threshold": "fast"}`, 400, `threshold: "fast" is not a duration`},
		{"PUT", "/sched", `{"policy": "pinned", "quantum": "1ms"}`, 400, "quantum: only the central policy takes it, not pinned"},
		{"PUT", "/sched", `{"policy": "linux"} {}`, 400, "trailing data"},
	} {
		code, msg := a.raw(t, tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %s %.60q: %d %q, want %d with %q", tc.method, tc.path, tc.body, code, msg, tc.code, tc.msg)
		}
	}
	if code, _ := a.raw(t, "GET", "/sched", ""); code != 200 {
		t.Errorf("the agent is unwell after the bad requests: %d", code)
	}

	a.stop(t)
	if _, err := os.Stat(a.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is still there after the agent stopped: %v", err)
	}
	if g := settle(g0); g > g0+2 {
		t.Errorf("%d goroutines before, %d after", g0, g)
	}
}

// TestStaleSocketReplaced: the socket of an agent killed with SIGKILL is
// replaced by the next one, which says so.
func TestStaleSocketReplaced(t *testing.T) {
	socket := filepath.Join(testenv.SocketDir(t), "agent.sock")
	child := exec.Command(os.Args[0], "-test.run", "^TestListenChild$")
	child.Env = append(os.Environ(), "COLIBRI_TEST_LISTEN="+socket)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "listening" {
		t.Fatalf("the child agent said %q (%v)", line, err)
	}
	if _, err := agent.Listen(socket); err == nil {
		t.Fatal("a second Listen succeeded while the first agent lives")
	}
	child.Process.Kill()
	child.Wait()
	ln, err := agent.Listen(socket)
	if err != nil {
		t.Fatalf("the dead agent's socket was not replaced: %v", err)
	}
	defer ln.Close()
	if !ln.Stale {
		t.Error("Listen did not say it replaced a stale socket")
	}
	if err := os.WriteFile(socket+"x", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Listen(socket + "x"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file at the path: %v", err)
	}
}

// TestListenChild is TestStaleSocketReplaced's agent: it listens and
// waits to be killed.
func TestListenChild(t *testing.T) {
	socket := os.Getenv("COLIBRI_TEST_LISTEN")
	if socket == "" {
		t.Skip("only run by TestStaleSocketReplaced, as its child process")
	}
	if _, err := agent.Listen(socket); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("listening\n")
	time.Sleep(time.Minute)
}

func settle(limit int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > limit; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}
