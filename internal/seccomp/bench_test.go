package seccomp

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchChild measures, in a re-executed child, the time of one ioctl
// that fails at once (KVM_RUN on fd -1), the vCPU's hottest call, under
// the filters layers names: "" none, "process", "vcpu" (process + vCPU
// list on the thread). It prints ns per call.
func benchChild(layers string, n int) error {
	if layers != "" {
		if err := Install(Options{}); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if layers == "vcpu" {
			if err := Thread(VCPU); err != nil {
				errc <- err
				return
			}
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			unix.Syscall(unix.SYS_IOCTL, ^uintptr(0), kvmRun, 0)
		}
		fmt.Printf("ns/call %.1f\n", float64(time.Since(start).Nanoseconds())/float64(n))
		errc <- nil
	}()
	return <-errc
}

// BenchmarkIoctlUnderFilters reports the cost the filters add to a
// system call: ns/call measured in a child process per layer set.
func BenchmarkIoctlUnderFilters(b *testing.B) {
	for _, layers := range []string{"", "process", "vcpu"} {
		name := layers
		if name == "" {
			name = "none"
		}
		b.Run(name, func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run", "^$", "-test.bench", "^$")
			cmd.Env = append(os.Environ(), childEnv+"=bench:"+layers+":"+strconv.Itoa(max(b.N, 1000)))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("child: %v\n%s", err, out)
			}
			f := strings.Fields(strings.TrimSpace(string(out)))
			if len(f) != 2 {
				b.Fatalf("child said %q", out)
			}
			ns, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(ns, "ns/call")
		})
	}
}
