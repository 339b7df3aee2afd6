// Command embed shows colibri's host package in a Go program of its own:
// a host with one switch, two guests on it that ping each other, their
// state changes as events, and a clean stop. Run it as root where KVM can
// boot a stock guest (or inside scripts/kvm-sandbox), from the repository
// root after 'make images':
//
//	go run ./examples/embed
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	images := "guestimages/out"
	h, err := host.New(ctx, host.Config{
		Spec: spec.File{Switches: []spec.Switch{{Name: "sw0"}}},
		DefaultKernel: func() (string, string, error) {
			return filepath.Join(images, "vmlinux"), filepath.Join(images, "initrd.img"), nil
		},
		DefaultCmdline: "console=ttyS0 quiet panic=-1",
		// Each guest's console, line by line, prefixed with its name.
		ConsoleSink: func(vm string) io.Writer { return prefixed(vm) },
		StopTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close(context.Background())

	events := h.Subscribe()
	go func() {
		for ev := range events.C() {
			if ev.Type == host.EventState {
				fmt.Printf("event: %s %s → %s (%s)\n", ev.VM, ev.Previous, ev.State, ev.Reason)
			}
		}
	}()

	ping := func(self, peer int) string {
		return fmt.Sprintf(`colibri.run="ip link set eth0 up; ip addr add 10.0.0.%d/24 dev eth0; ping -c 5 -w 60 10.0.0.%d"`, self, peer)
	}
	var vms []*host.VM
	for i, name := range []string{"a", "b"} {
		v, err := h.CreateVM(spec.VM{Name: name, CPUs: 1, Mem: 256 << 20, NICs: []spec.NIC{{Switch: "sw0"}},
			Append: ping(i+1, 2-i)})
		if err != nil {
			log.Fatal(err)
		}
		if err := v.Start(); err != nil {
			log.Fatal(err)
		}
		vms = append(vms, v)
	}
	for _, v := range vms {
		exit, err := v.Wait(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %v (status %d)\n", v.Name(), exit.Kind, exit.Status())
	}
}

// lineWriter prefixes each line with a name.
type lineWriter struct {
	prefix string
	buf    []byte
}

func prefixed(name string) *lineWriter { return &lineWriter{prefix: name + "| "} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Print(w.prefix + strings.TrimRight(string(w.buf[:i]), "\r") + "\n")
		w.buf = w.buf[i+1:]
	}
}
