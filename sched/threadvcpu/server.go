package threadvcpu

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/colibrivm/colibri/sched/latency"
)

// Server is latency-critical work: an open-loop request/response server.
// Requests arrive as a Poisson process at Rate per second, independent of
// how fast they are served (arrival times are drawn ahead, as a load
// generator would send them); the thread sleeps until the next arrival —
// a host timer wakes it, as an interrupt wakes a guest — then serves the
// queued requests in order, each by computing for a service time drawn
// from Service. A request's latency, from arrival to completion, goes to
// Latency. Being parked or preempted delays requests, as it would a guest.
type Server struct {
	// Rate is the arrival rate in requests per second; required.
	Rate float64
	// Service is the service-time distribution; required.
	Service Dist
	// ItersPerUS is the spin speed from [Calibrate]; 0 means 100.
	ItersPerUS int
	// Seed seeds the arrival and service draws.
	Seed uint64
	// Latency receives each request's latency; required.
	Latency *latency.Histogram

	rng       *rand.Rand
	next      int64 // next arrival, CLOCK_MONOTONIC ns
	cur       int64 // arrival of the request in service
	remaining int   // spin iterations left for it; 0 when idle
	x         uint64
	done      atomic.Uint64
	recording atomic.Bool
}

// Served returns the number of requests completed.
func (s *Server) Served() uint64 { return s.done.Load() }

// Record turns latency recording on or off. It starts off, so that a
// warm-up is not measured: call Record(true) when the window opens.
func (s *Server) Record(on bool) { s.recording.Store(on) }

// Run implements [Work].
func (s *Server) Run(g *Guest) {
	per := s.ItersPerUS
	if per <= 0 {
		per = 100
	}
	if s.rng == nil {
		s.rng = rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
		s.next = g.Now() + s.gap()
	}
	if s.Rate <= 0 || s.Service == nil {
		g.SleepUntil(1 << 62) // no load: idle until kicked
		return
	}
	for !g.Exit() {
		if s.remaining == 0 {
			if s.next > g.Now() {
				if !g.SleepUntil(s.next) {
					return
				}
				continue
			}
			s.cur = s.next
			s.next += s.gap()
			s.remaining = int(float64(s.Service.Sample(s.rng)) / 1e3 * float64(per))
			if s.remaining < 1 {
				s.remaining = 1
			}
		}
		chunk := per
		if chunk > s.remaining {
			chunk = s.remaining
		}
		s.x = spin(chunk, s.x)
		s.remaining -= chunk
		if s.remaining == 0 {
			if s.recording.Load() {
				s.Latency.RecordNanos(g.Now() - s.cur)
			}
			s.done.Add(1)
		}
	}
}

// gap draws the time to the next arrival in ns.
func (s *Server) gap() int64 {
	if s.Rate <= 0 {
		return 1 << 62
	}
	return int64(s.rng.ExpFloat64() / s.Rate * float64(time.Second))
}
