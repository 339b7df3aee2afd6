package netstack

import (
	"log/slog"
	"time"
)

// SetClock replaces sw's clock (monotonic nanoseconds) for tests.
func SetClock(sw *Switch, now func() int64) { sw.now = now }

// SyncPoller runs the pollers' switching code synchronously on the
// calling goroutine, with no thread, epoll or Stack around it.
type SyncPoller struct {
	p    *poller
	list []*epSlot
}

// NewSyncPoller returns a SyncPoller taking batch frames per Transmit.
func NewSyncPoller(batch int) *SyncPoller {
	st := &Stack{cfg: Config{Batch: batch}, log: slog.New(slog.DiscardHandler)}
	p := &poller{st: st, batch: batch, dirty: make([]dirtyDest, 0, 64)}
	p.initSwitching()
	return &SyncPoller{p: p}
}

// NewSyncPollerTxDelay is NewSyncPoller holding transmit completion
// notices for delay (Config.TxNoticeDelay).
func NewSyncPollerTxDelay(batch int, delay time.Duration) *SyncPoller {
	sp := NewSyncPoller(batch)
	sp.p.txDelay = int64(delay)
	return sp
}

// SendHeldTx sends the notices held for the endpoints of the last Poll,
// as a poller does before it sleeps.
func (sp *SyncPoller) SendHeldTx() {
	sp.p.list = sp.list
	sp.p.sendHeldTx()
}

// Poll makes one pass over the endpoints of ports and returns the frames
// it took from their transmit sides.
func (sp *SyncPoller) Poll(ports ...*Port) uint64 {
	sp.list = sp.list[:0]
	for _, p := range ports {
		sp.list = append(sp.list, p.eps.Load().slots...)
	}
	n, _ := sp.p.pass(sp.list)
	return n
}

// FlowHash exposes flowHash.
var FlowHash = flowHash

// HoldLimits exposes the hold queue's limits.
const (
	HoldFrames = holdFrames
	HoldBytes  = holdBytes
	HoldFor    = holdFor
)
