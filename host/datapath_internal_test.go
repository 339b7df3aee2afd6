package host

import (
	"testing"
	"time"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/netstack"
)

// TestStackConfigTxNoticeDelay: the file's delay reaches netstack, 0 as
// "none" (netstack's negative), absent as netstack's default (0).
func TestStackConfigTxNoticeDelay(t *testing.T) {
	d := func(v time.Duration) *time.Duration { return &v }
	for _, c := range []struct {
		in   *time.Duration
		want time.Duration
	}{{nil, 0}, {d(0), -1}, {d(3 * time.Millisecond), 3 * time.Millisecond}} {
		if got := stackConfig(spec.Pollers{TxNoticeDelay: c.in}, nil).TxNoticeDelay; got != c.want {
			t.Errorf("tx_notice_delay %v: netstack TxNoticeDelay %v, want %v", c.in, got, c.want)
		}
	}
}

func TestStackConfigSpin(t *testing.T) {
	d := func(v time.Duration) *time.Duration { return &v }
	for _, c := range []struct {
		spin          *time.Duration
		noSpin        bool
		idle, maxIdle time.Duration
	}{
		{nil, false, 0, 0}, // the datapath's defaults
		{d(0), true, 0, 0},
		{d(50 * time.Microsecond), false, 50 * time.Microsecond, 50 * time.Microsecond},
		{d(5 * time.Millisecond), false, netstack.DefaultIdleAfter, 5 * time.Millisecond},
	} {
		cfg := stackConfig(spec.Pollers{Cores: []int{1}, Spin: c.spin}, nil)
		if cfg.NoSpin != c.noSpin || cfg.IdleAfter != c.idle || cfg.MaxIdleAfter != c.maxIdle || len(cfg.PollerCores) != 1 {
			t.Errorf("spin %v: NoSpin %v IdleAfter %v MaxIdleAfter %v cores %v, want %v %v %v [1]",
				c.spin, cfg.NoSpin, cfg.IdleAfter, cfg.MaxIdleAfter, cfg.PollerCores, c.noSpin, c.idle, c.maxIdle)
		}
	}
}
