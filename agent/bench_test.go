package agent_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/colibrivm/colibri/agent"
	"github.com/colibrivm/colibri/agent/client"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
)

// BenchmarkAPI times one request and its answer over the agent's real
// Unix socket, sequentially, with p50 and p99 besides the mean:
//
//	go test -run X -bench API -benchtime 2000x ./agent
func BenchmarkAPI(b *testing.B) {
	h, err := host.New(context.Background(), host.Config{Spec: spec.File{Switches: []spec.Switch{{Name: "sw0"}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	ln, err := agent.Listen(filepath.Join(testenv.SocketDir(b), "agent.sock"))
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: agent.New(agent.Config{Host: h, Version: "bench"}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	c := client.New(ln.Path())
	defer c.Close()
	for _, r := range []struct{ name, path string }{
		{"ping", "/ping"}, {"sched", "/sched"}, {"vms", "/vms"}, {"switches", "/switches"}, {"metrics", "/metrics"},
	} {
		b.Run(r.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				resp, err := c.Do(ctx, "GET", r.path, nil, "")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
		})
	}
}
