// Package agent serves a colibri host over HTTP: the API of `colibri
// agent`, specified in agent/api's OpenAPI document, on a Unix socket.
// Server is an http.Handler over a *host.Host; Listen prepares the socket
// (refusing a live agent on it, replacing a stale one).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/logattr"
)

// MaxBody is the largest request body the API takes.
const MaxBody = 1 << 20

// Config configures a Server.
type Config struct {
	// Host is the host the API drives.
	Host *host.Host
	// Version is colibri's version, for /version and /ping.
	Version string
	// Logger receives one line per request at debug level and errors.
	Logger *slog.Logger
}

// Server is the agent's HTTP API. It is an http.Handler.
type Server struct {
	h       *host.Host
	version string
	log     *slog.Logger
	mux     *http.ServeMux
	metrics http.Handler
}

// Route is one route the server serves: a method and a path pattern in
// the OpenAPI document's syntax (/vms/{name}).
type Route struct {
	Method, Path string
}

// route is a Route with its handler.
type route struct {
	Route
	serve func(w http.ResponseWriter, r *http.Request) error
}

// New returns the server for cfg.Host.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: cfg.Host, version: cfg.Version, log: cfg.Logger, mux: http.NewServeMux()}
	s.metrics = newMetrics(cfg.Host)
	byPath := map[string]map[string]route{}
	var paths []string
	for _, rt := range s.routes() {
		if byPath[rt.Path] == nil {
			byPath[rt.Path] = map[string]route{}
			paths = append(paths, rt.Path)
		}
		byPath[rt.Path][rt.Method] = rt
	}
	for _, p := range paths {
		methods := byPath[p]
		s.mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rt, ok := methods[r.Method]
			if !ok && r.Method == http.MethodHead {
				rt, ok = methods[http.MethodGet]
			}
			if !ok {
				var allow []string
				for m := range methods {
					allow = append(allow, m)
				}
				sort.Strings(allow)
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
				return
			}
			s.serve(w, r, rt)
		}))
	}
	s.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s (GET /openapi.yaml lists them)", r.Method, r.URL.Path))
	}))
	return s
}

// Routes lists the routes the server serves.
func (s *Server) Routes() []Route {
	var out []Route
	for _, rt := range s.routes() {
		out = append(out, rt.Route)
	}
	return out
}

func (s *Server) routes() []route {
	return []route{
		{Route{"GET", "/ping"}, s.ping},
		{Route{"GET", "/version"}, s.ping},
		{Route{"GET", "/openapi.yaml"}, s.openapi},
		{Route{"GET", "/vms"}, s.listVMs},
		{Route{"POST", "/vms"}, s.createVM},
		{Route{"GET", "/vms/{name}"}, s.getVM},
		{Route{"DELETE", "/vms/{name}"}, s.deleteVM},
		{Route{"POST", "/vms/{name}/start"}, s.startVM},
		{Route{"POST", "/vms/{name}/pause"}, s.pauseVM},
		{Route{"POST", "/vms/{name}/resume"}, s.resumeVM},
		{Route{"POST", "/vms/{name}/stop"}, s.stopVM},
		{Route{"GET", "/vms/{name}/wait"}, s.waitVM},
		{Route{"GET", "/vms/{name}/counters"}, s.countersVM},
		{Route{"GET", "/vms/{name}/console"}, s.consoleVM},
		{Route{"GET", "/switches"}, s.switches},
		{Route{"GET", "/sched"}, s.getSched},
		{Route{"PUT", "/sched"}, s.setSched},
		{Route{"GET", "/events"}, s.events},
		{Route{"GET", "/metrics"}, s.metricsRoute},
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// serve runs one route's handler and turns its error into a response.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) {
	t0 := time.Now()
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	err := rt.serve(w, r)
	if err != nil {
		code, msg := statusOf(err)
		if code >= 500 {
			s.log.Error("API request failed", slog.String("method", r.Method), slog.String("path", r.URL.Path), logattr.Err(err))
		}
		writeError(w, code, msg)
	}
	s.log.Debug("API request", slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Duration("took", time.Since(t0)), logattr.Err(err))
}

// requestError is an error the client caused, with its status code.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// statusOf maps an error to a status code and a message.
func statusOf(err error) (int, string) {
	var re *requestError
	var se *spec.Error
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &re):
		return re.code, re.msg
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mb.Limit)
	case errors.As(err, &se):
		return http.StatusBadRequest, se.Error()
	case errors.Is(err, host.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, host.ErrExists), errors.Is(err, host.ErrState), errors.Is(err, host.ErrUnsupported):
		return http.StatusConflict, err.Error()
	case errors.Is(err, host.ErrClosed):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, err.Error()
	}
	return http.StatusInternalServerError, err.Error()
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// readBody reads a whole request body (bounded by MaxBody).
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, err
		}
		return nil, badRequest("reading the request body: %v", err)
	}
	return b, nil
}

// decodeStrict decodes an optional JSON body into v, refusing unknown
// fields and trailing data; an empty body leaves v as it is.
func decodeStrict(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return badRequest("%s: want %s, got a JSON %s", te.Field, te.Type, te.Value)
		}
		return badRequest("body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return badRequest("body: trailing data after the JSON object")
	}
	return nil
}

// boolQuery reads an optional boolean query parameter.
func boolQuery(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("query parameter %s=%q: want true or false", name, v)
	}
	return b, nil
}

// durationQuery reads an optional duration, from a query parameter or a
// body field, naming where it came from in errors.
func parseDuration(where, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, badRequest("%s: %q is not a duration (use e.g. 30s or 20us)", where, v)
	}
	if d < 0 {
		return 0, badRequest("%s: %q must not be negative", where, v)
	}
	return d, nil
}

func (s *Server) vm(r *http.Request) (*host.VM, error) {
	return s.h.VM(r.PathValue("name"))
}

func (s *Server) ping(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, api.Ping{Version: s.version, API: api.Version})
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, err := w.Write(api.Spec)
	return err
}

func (s *Server) listVMs(w http.ResponseWriter, _ *http.Request) error {
	out := []api.VM{}
	for _, v := range s.h.VMs() {
		out = append(out, vmJSON(v.Info()))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request) error {
	start, err := boolQuery(r, "start")
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	vs, err := spec.ParseVM(body, spec.JSON, "")
	if err != nil {
		return err
	}
	for _, p := range []struct{ field, path string }{{"kernel", vs.Kernel}, {"initrd", vs.Initrd}, {"console", vs.Console}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return badRequest("%s: %q is a relative path: the agent needs absolute paths", p.field, p.path)
		}
	}
	for i, d := range vs.Disks {
		if !filepath.IsAbs(d.Path) {
			return badRequest("disks[%d].path: %q is a relative path: the agent needs absolute paths", i, d.Path)
		}
	}
	v, err := s.h.CreateVM(*vs)
	if err != nil {
		var se *spec.Error
		if errors.As(err, &se) || errors.Is(err, host.ErrExists) || errors.Is(err, host.ErrClosed) {
			return err
		}
		// What the VMM refused (a kernel it cannot read, memory too small
		// for it, a disk in use) is the request's fault.
		return badRequest("%v", err)
	}
	if start {
		if err := v.Start(); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusCreated, vmJSON(v.Info()))
	return nil
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) error {
	v, err := s.vm(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vmJSON(v.Info()))
	return nil
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request) error {
	force, err := boolQuery(r, "force")
	if err != nil {
		return err
	}
	if err := s.h.Delete(r.PathValue("name"), force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// lifecycle serves a route that applies op to a VM and answers with it.
func (s *Server) lifecycle(w http.ResponseWriter, r *http.Request, op func(*host.VM) error) error {
	v, err := s.vm(r)
	if err != nil {
		return err
	}
	if err := op(v); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vmJSON(v.Info()))
	return nil
}

func (s *Server) startVM(w http.ResponseWriter, r *http.Request) error {
	if err := decodeStrict(r, &struct{}{}); err != nil {
		return err
	}
	return s.lifecycle(w, r, (*host.VM).Start)
}

func (s *Server) pauseVM(w http.ResponseWriter, r *http.Request) error {
	if err := decodeStrict(r, &struct{}{}); err != nil {
		return err
	}
	return s.lifecycle(w, r, func(v *host.VM) error { return v.Pause(r.Context()) })
}

func (s *Server) resumeVM(w http.ResponseWriter, r *http.Request) error {
	if err := decodeStrict(r, &struct{}{}); err != nil {
		return err
	}
	return s.lifecycle(w, r, (*host.VM).Resume)
}

func (s *Server) stopVM(w http.ResponseWriter, r *http.Request) error {
	var body api.Stop
	if err := decodeStrict(r, &body); err != nil {
		return err
	}
	timeout, err := parseDuration("timeout", body.Timeout)
	if err != nil {
		return err
	}
	return s.lifecycle(w, r, func(v *host.VM) error {
		return v.Stop(r.Context(), host.StopOptions{Force: body.Force, Timeout: timeout})
	})
}

func (s *Server) waitVM(w http.ResponseWriter, r *http.Request) error {
	v, err := s.vm(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := parseDuration("query parameter timeout", t)
		if err != nil {
			return err
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	exit, err := v.Wait(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, exitJSON(exit))
	return nil
}

func (s *Server) countersVM(w http.ResponseWriter, r *http.Request) error {
	v, err := s.vm(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, countersJSON(v.Stats()))
	return nil
}

// consoleVM writes the VM's console output: what is buffered from offset
// (default: the oldest byte kept), and with follow=true what comes next,
// until the client goes or the VM is deleted.
func (s *Server) consoleVM(w http.ResponseWriter, r *http.Request) error {
	v, err := s.vm(r)
	if err != nil {
		return err
	}
	follow, err := boolQuery(r, "follow")
	if err != nil {
		return err
	}
	var off int64
	if o := r.URL.Query().Get("offset"); o != "" {
		if off, err = strconv.ParseInt(o, 10, 64); err != nil || off < 0 {
			return badRequest("query parameter offset=%q: want a byte offset (0 or more)", o)
		}
	}
	c := v.Console()
	buf := make([]byte, 32<<10)
	n, at := c.ReadAt(buf, off)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Console-Offset", strconv.FormatInt(at, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(buf[:n]); err != nil {
		return nil
	}
	off = at + int64(n)
	fl, _ := w.(http.Flusher)
	for {
		if !follow {
			n, at = c.ReadAt(buf, off)
			if n == 0 {
				return nil
			}
		} else {
			if fl != nil {
				fl.Flush()
			}
			n, at, err = c.Follow(r.Context(), buf, off)
			if err != nil {
				return nil // the client left, or the console ended
			}
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return nil
		}
		off = at + int64(n)
	}
}

func (s *Server) switches(w http.ResponseWriter, _ *http.Request) error {
	out := []api.Switch{}
	for _, sw := range s.h.Stats().Netstack.Switches {
		js := api.Switch{Name: sw.Name, MACs: sw.MACs, Ports: []api.Port{}}
		for _, p := range sw.Ports {
			js.Ports = append(js.Ports, api.Port{Name: p.Name, Queues: p.Queues, Paused: p.Paused, RxPackets: p.RxPackets, RxBytes: p.RxBytes,
				TxPackets: p.TxPackets, TxBytes: p.TxBytes, Drops: dropsJSON(p.Drops)})
		}
		out = append(out, js)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSched(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, schedJSON(s.h.SchedInfo()))
	return nil
}

func (s *Server) setSched(w http.ResponseWriter, r *http.Request) error {
	var body api.SetSched
	if err := decodeStrict(r, &body); err != nil {
		return err
	}
	if body.Policy == "" {
		return badRequest("policy: missing (one of linux, pinned, central, adaptive)")
	}
	p := host.PolicySpec{Name: body.Policy}
	var err error
	for _, d := range []struct {
		name string
		v    string
		out  *time.Duration
	}{{"threshold", body.Threshold, &p.Threshold}, {"quantum", body.Quantum, &p.Quantum}, {"grace", body.Grace, &p.Grace}} {
		if *d.out, err = parseDuration(d.name, d.v); err != nil {
			return err
		}
	}
	if err := s.h.SetPolicy(p); err != nil {
		if errors.Is(err, host.ErrUnsupported) {
			return err
		}
		return badRequest("%v", err)
	}
	writeJSON(w, http.StatusOK, schedJSON(s.h.SchedInfo()))
	return nil
}

// events streams the host's events from now on, one JSON object a line
// (application/x-ndjson), or as server-sent events when the client
// accepts text/event-stream, until the client goes or the host closes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	sub := s.h.Subscribe()
	defer sub.Close()
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case ev, ok := <-sub.C():
			if !ok {
				return nil
			}
			b, _ := json.Marshal(eventJSON(ev))
			if sse {
				_, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, b)
				if err != nil {
					return nil
				}
			} else if _, err := w.Write(append(b, '\n')); err != nil {
				return nil
			}
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return nil
		}
	}
}

func (s *Server) metricsRoute(w http.ResponseWriter, r *http.Request) error {
	s.metrics.ServeHTTP(w, r)
	return nil
}
