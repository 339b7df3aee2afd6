// Command memstat runs colibri in several configurations and prints where
// each one's resident memory goes, mapping by mapping (/proc/PID/smaps):
// the binary's text, rodata, data and bss, the Go heap, thread stacks, the
// rest of the anonymous memory (the Go runtime's off-heap structures), the
// C library and loader, what the kernel maps (vDSO, kvm_run pages, BPF
// maps) and other files, and the total beyond guest memory (every mapping
// but the guest-RAM memfd: what `colibri boot --stats` prints as "VMM RSS
// beyond guest memory").
//
//	make memstat
//	go build -o bin/memstat ./scripts/memstat && flock /tmp/colibri-sandbox.lock \
//	    scripts/kvm-run bin/memstat [-colibri bin/colibri] [-images DIR] \
//	    [-hello bin/memstat-hello] [-imports bin/memstat-imports] [-configs a,b] [-runs N] [-v]
//	bin/memstat -- CMD [ARGS...]    one command, its breakdown at exit
//	bin/memstat -pid PID            a running process, now
//
// Configurations (-configs, default all): hello (a Go hello world), imports
// (a hello world linking every package colibri's command links),
// version, boot (bzImage, the cache of decompressed kernels empty: the
// guest decompresses, colibri fills the cache beside it), boot-cached (the
// same bzImage again, read from the cache), boot-vmlinux (the ELF kernel,
// as make test's boot tests: colibri boot becomes colibri-vmm),
// boot-inprocess (the same in colibri's own process: COLIBRI_VMM=off),
// boot-net (boot --net tap=...: a host in colibri's process), up (one VM
// on a switch, the central scheduler and its eBPF observer) and agent (the
// agent idle, no VM). Every VM has 1 vCPU and 256 MiB.
//
// Each child runs under ptrace with PTRACE_O_TRACEEXIT, so its mappings
// can be read at its exit before the kernel frees them. A run with a VM is
// measured by its last sample (every -interval) taken while guest memory
// was mapped, the agent just before its SIGTERM, anything else at exit.
// "peak" is the highest RssAnon+RssFile of /proc/PID/status over the
// samples (guest memory is shmem, not in it; a file-backed peak in a
// short run can be missed between samples), and "stats" is the number
// colibri printed itself.
//
// It needs root, KVM and a TAP-capable host for the VM configurations
// (inside scripts/kvm-sandbox here).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/colibrivm/colibri/internal/smaps"
)

const mib = 1 << 20

type options struct {
	colibri, images, hello, imports string
	interval                        time.Duration
	timeout                         time.Duration
	verbose                         bool
}

func main() {
	var o options
	configs := flag.String("configs", "all", "comma-separated configurations to run (hello, imports, version, boot, boot-cached, boot-vmlinux, boot-inprocess, boot-net, up, agent) or all")
	runs := flag.Int("runs", 1, "runs of each configuration")
	flag.StringVar(&o.colibri, "colibri", "bin/colibri", "the colibri binary")
	flag.StringVar(&o.images, "images", "", "guest images (default $COLIBRI_IMAGES or guestimages/out)")
	flag.StringVar(&o.hello, "hello", "bin/memstat-hello", "the hello world binary (scripts/memstat/hello)")
	flag.StringVar(&o.imports, "imports", "bin/memstat-imports", "the hello world linking colibri's packages (scripts/memstat/imports)")
	flag.DurationVar(&o.interval, "interval", 200*time.Millisecond, "sampling interval")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "kill a run after this long")
	flag.BoolVar(&o.verbose, "v", false, "also list each run's largest mappings")
	pid := flag.Int("pid", 0, "break down the mappings of this running process now, and exit")
	flag.Parse()
	if *pid != 0 {
		printOne(snapshot(*pid))
		return
	}
	if o.images == "" {
		o.images = os.Getenv("COLIBRI_IMAGES")
	}
	if o.images == "" {
		o.images = "guestimages/out"
	}
	if flag.NArg() > 0 {
		printOne(measure(run{name: filepath.Base(flag.Arg(0)), argv: flag.Args()}, o))
		return
	}
	if err := runAll(o, *configs, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "memstat:", err)
		os.Exit(1)
	}
}

// printOne prints one result with its largest mappings, or exits with err.
func printOne(r result, err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "memstat:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, []result{r})
	printMappings(os.Stdout, r, 40)
}

// snapshot breaks down the mappings of the running process pid.
func snapshot(pid int) (result, error) {
	ms, err := smaps.Read(pid)
	if err != nil {
		return result{}, err
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	res := result{name: filepath.Base(exe), ms: ms, when: "now", stats: "-"}
	res.kinds = smaps.Classify(ms, exe)
	res.b = smaps.Sum(ms, res.kinds)
	if n, ok := statusRSS(pid); ok {
		res.peak = n
	}
	if n, ok := statusHWM(pid); ok {
		res.hwm = n
	}
	return res, nil
}

// run is one command to measure.
type run struct {
	name string
	argv []string
	env  []string
	// vm: measured by the last sample with guest memory mapped.
	vm bool
	// stopWhen, if set, is waited for; then a sample is taken and the
	// process gets SIGTERM.
	stopWhen func() bool
	// cleanup runs after the process is gone.
	cleanup func()
}

// result is one measured run.
type result struct {
	name     string
	ms       []smaps.Mapping
	kinds    []smaps.Kind
	b        smaps.Breakdown
	peak     uint64 // highest RssAnon+RssFile seen
	peakAnon uint64 // highest RssAnon seen
	hwm      uint64 // VmHWM at exit (guest memory included)
	stats    string // what colibri --stats printed about its RSS
	exitCode int
	when     string // which sample the breakdown is
	stderr   string
}

func runAll(o options, configs string, runs int) error {
	dir, err := os.MkdirTemp("", "memstat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	all := defineRuns(o, dir)
	var names []string
	if configs == "all" {
		for _, r := range all {
			names = append(names, r.name)
		}
	} else {
		names = strings.Split(configs, ",")
	}
	var results []result
	for _, name := range names {
		i := slices.IndexFunc(all, func(r run) bool { return r.name == name })
		if i < 0 {
			return fmt.Errorf("no configuration %q", name)
		}
		for n := 0; n < runs; n++ {
			r, err := measure(all[i], o)
			if all[i].cleanup != nil {
				all[i].cleanup()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if r.exitCode != 0 {
				fmt.Fprintf(os.Stderr, "memstat: %s exited %d:\n%s\n", name, r.exitCode, tail(r.stderr, 20))
			}
			fmt.Fprintf(os.Stderr, "memstat: %s: %.1f MiB beyond guest memory (%s)\n", name, float64(r.b.BeyondGuest())/mib, r.when)
			results = append(results, r)
		}
	}
	printTable(os.Stdout, results)
	if o.verbose {
		for _, r := range results {
			printMappings(os.Stdout, r, 25)
		}
	}
	return nil
}

// defineRuns returns every configuration, in table order.
func defineRuns(o options, dir string) []run {
	kernel := filepath.Join(o.images, "vmlinuz")
	vmlinux := filepath.Join(o.images, "vmlinux")
	initrd := filepath.Join(o.images, "initrd.img")
	cache := filepath.Join(dir, "cache")
	// The bzImage runs share a cache of decompressed kernels of their own:
	// boot finds it empty, boot-cached finds what boot filled.
	env := []string{"XDG_CACHE_HOME=" + cache}
	const cmdline = `console=ttyS0 quiet panic=-1 colibri.run="echo memstat-ok"`
	bootArgs := func(k string, extra ...string) []string {
		a := []string{o.colibri, "boot", "--stats", "--cpus", "1", "--mem", "256M", "--kernel", k, "--initrd", initrd, "--cmdline", cmdline}
		return append(a, extra...)
	}
	netCmdline := `console=ttyS0 quiet panic=-1 colibri.run="ip link set eth0 up; sleep 2; echo memstat-ok"`
	upFile := filepath.Join(dir, "up.yaml")
	sock := filepath.Join("/run", fmt.Sprintf("memstat-%d.sock", os.Getpid()))
	return []run{
		{name: "hello", argv: []string{o.hello}},
		{name: "imports", argv: []string{o.imports}},
		{name: "version", argv: []string{o.colibri, "version"}},
		{name: "boot", argv: bootArgs(kernel), env: env, vm: true},
		{name: "boot-cached", argv: bootArgs(kernel), env: env, vm: true},
		{name: "boot-vmlinux", argv: bootArgs(vmlinux), env: env, vm: true},
		{name: "boot-inprocess", argv: bootArgs(vmlinux), env: append(env, "COLIBRI_VMM=off"), vm: true},
		{name: "boot-net", argv: []string{o.colibri, "boot", "--stats", "--cpus", "1", "--mem", "256M", "--kernel", vmlinux, "--initrd", initrd,
			"--cmdline", netCmdline, "--net", "tap=memstat0"}, env: env, vm: true},
		{name: "up", argv: []string{o.colibri, "up", "--stats", writeUpFile(upFile, vmlinux, initrd)}, env: env, vm: true},
		{name: "agent", argv: []string{o.colibri, "agent", "--socket", sock}, env: env, stopWhen: func() bool {
			// Ready once the socket is there; then let it settle.
			for start := time.Now(); time.Since(start) < 5*time.Minute; time.Sleep(100 * time.Millisecond) {
				if _, err := os.Stat(sock); err == nil {
					time.Sleep(5 * time.Second)
					return true
				}
			}
			return false
		}},
	}
}

// writeUpFile writes an up file of one VM on a switch under the central
// scheduler (scaled for the sandbox as TestKVMUpCentral is) and returns
// its path.
func writeUpFile(path, kernel, initrd string) string {
	y := "pollers: {}\n" +
		"sched: {policy: central, cores: [0], period: 1ms, threshold: 1ms}\n" +
		"switches: [{name: sw0}]\n" +
		"vms:\n" +
		"  - {name: a, class: lc, cpus: 1, mem: 256M, kernel: " + strconv.Quote(kernel) + ", initrd: " + strconv.Quote(initrd) +
		", nics: [{switch: sw0}], append: 'colibri.run=\"ip link set eth0 up; sleep 2; echo memstat-ok\"'}\n"
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "memstat:", err)
	}
	return path
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sample is one reading of the child's mappings.
type sample struct {
	ms    []smaps.Mapping
	guest bool
}

// measure runs r under ptrace and returns its breakdown.
func measure(r run, o options) (result, error) {
	res := result{name: r.name}
	errf, err := os.CreateTemp("", "memstat-stderr-")
	if err != nil {
		return res, err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	outf, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	defer outf.Close()
	if o.verbose || flag.NArg() > 0 {
		outf = os.Stdout
	}

	// ptrace requests must come from the thread that started the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Stdout, cmd.Stderr = outf, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
		syscall.Kill(pid, syscall.SIGKILL)
		return res, fmt.Errorf("%s did not stop after exec (%v, %v)", r.argv[0], ws, err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err := syscall.PtraceSetOptions(pid, 1<<6 /* PTRACE_O_TRACEEXIT */); err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		return res, fmt.Errorf("PTRACE_SETOPTIONS: %w", err)
	}

	var (
		mu       sync.Mutex
		last     sample // last sample with guest memory mapped
		before   sample // the sample before SIGTERM
		peak     uint64
		peakAnon uint64
		done     = make(chan struct{})
		finished sync.WaitGroup
	)
	finished.Add(1)
	go func() {
		defer finished.Done()
		t := time.NewTicker(o.interval)
		defer t.Stop()
		for {
			if n, ok := statusRSS(pid); ok {
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
			}
			if n, ok := statusAnon(pid); ok {
				mu.Lock()
				peakAnon = max(peakAnon, n)
				mu.Unlock()
			}
			if r.vm {
				if ms, err := smaps.Read(pid); err == nil && hasGuest(ms) {
					mu.Lock()
					last = sample{ms: ms, guest: true}
					mu.Unlock()
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	if r.stopWhen != nil {
		finished.Add(1)
		go func() {
			defer finished.Done()
			if !r.stopWhen() {
				return
			}
			ms, err := smaps.Read(pid)
			if err == nil {
				mu.Lock()
				before = sample{ms: ms}
				mu.Unlock()
			}
			syscall.Kill(pid, syscall.SIGTERM)
		}()
	}
	deadline := time.AfterFunc(o.timeout, func() { syscall.Kill(-pid, syscall.SIGKILL) })
	defer deadline.Stop()

	var atExit []smaps.Mapping
	if err := syscall.PtraceCont(pid, 0); err != nil {
		return res, err
	}
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return res, err
		}
		if ws.Exited() || ws.Signaled() {
			break
		}
		if !ws.Stopped() {
			continue
		}
		sig := ws.StopSignal()
		if sig == syscall.SIGTRAP && ws.TrapCause() == 6 /* PTRACE_EVENT_EXIT */ {
			atExit, _ = smaps.Read(pid)
			// The binary it ends in (colibri boot execs colibri-vmm).
			if e, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
				exe = e
			}
			if n, ok := statusHWM(pid); ok {
				res.hwm = n
			}
			if n, ok := statusRSS(pid); ok {
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
			}
			sig = 0
		}
		if sig == syscall.SIGTRAP || sig == syscall.SIGSTOP {
			sig = 0
		}
		_ = syscall.PtraceCont(pid, int(sig))
	}
	close(done)
	finished.Wait()
	res.exitCode = ws.ExitStatus()
	if ws.Signaled() {
		res.exitCode = 128 + int(ws.Signal())
	}
	errf.Seek(0, io.SeekStart)
	b, _ := io.ReadAll(errf)
	res.stderr = string(b)
	res.stats = parseStats(res.stderr)
	res.peak = peak
	res.peakAnon = peakAnon

	switch {
	case r.vm && last.guest:
		res.ms, res.when = last.ms, "last sample with guest memory mapped"
	case r.stopWhen != nil && before.ms != nil:
		res.ms, res.when = before.ms, "before SIGTERM"
	default:
		res.ms, res.when = atExit, "at exit"
	}
	if res.ms == nil {
		return res, fmt.Errorf("no sample of %s's mappings (exit %d)\n%s", r.name, res.exitCode, tail(res.stderr, 20))
	}
	res.kinds = smaps.Classify(res.ms, exe)
	res.b = smaps.Sum(res.ms, res.kinds)
	return res, nil
}

func hasGuest(ms []smaps.Mapping) bool {
	return slices.ContainsFunc(ms, func(m smaps.Mapping) bool { return strings.Contains(m.Path, smaps.GuestMemoryName) })
}

// statusFields reads the kB fields named of /proc/PID/status.
func statusFields(pid int, names ...string) (map[string]uint64, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !slices.Contains(names, k) {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 2 {
			if n, err := strconv.ParseUint(fs[0], 10, 64); err == nil {
				out[k] = n << 10
			}
		}
	}
	return out, len(out) == len(names)
}

func statusRSS(pid int) (uint64, bool) {
	m, ok := statusFields(pid, "RssAnon", "RssFile")
	return m["RssAnon"] + m["RssFile"], ok
}

func statusAnon(pid int) (uint64, bool) {
	m, ok := statusFields(pid, "RssAnon")
	return m["RssAnon"], ok
}

func statusHWM(pid int) (uint64, bool) {
	m, ok := statusFields(pid, "VmHWM")
	return m["VmHWM"], ok
}

var statsRE = regexp.MustCompile(`VMM RSS beyond guest memory: ([0-9.]+) MiB`)

func parseStats(stderr string) string {
	var all []string
	for _, m := range statsRE.FindAllStringSubmatch(stderr, -1) {
		all = append(all, m[1])
	}
	return strings.Join(all, "/")
}

// columns are the table's kinds, in order.
var columns = []struct {
	head  string
	kinds []smaps.Kind
}{
	{"text", []smaps.Kind{smaps.Text}},
	{"rodata", []smaps.Kind{smaps.ROData}},
	{"data+bss", []smaps.Kind{smaps.Data, smaps.BSS}},
	{"go-heap", []smaps.Kind{smaps.GoHeap}},
	{"stacks", []smaps.Kind{smaps.Stack}},
	{"other-anon", []smaps.Kind{smaps.OtherAnon}},
	{"libc+ld", []smaps.Kind{smaps.Lib}},
	{"kernel", []smaps.Kind{smaps.Kernel}},
	{"files", []smaps.Kind{smaps.OtherFile}},
}

func printTable(w io.Writer, rs []result) {
	fmt.Fprintf(w, "%-13s", "MiB")
	for _, c := range columns {
		fmt.Fprintf(w, " %10s", c.head)
	}
	fmt.Fprintf(w, " | %6s %6s %7s | %6s %7s %6s %8s\n", "anon", "file", "TOTAL", "peak", "pk-anon", "hwm", "stats")
	for _, r := range rs {
		fmt.Fprintf(w, "%-13s", r.name)
		for _, c := range columns {
			var n uint64
			for _, k := range c.kinds {
				n += r.b.Get(k)
			}
			fmt.Fprintf(w, " %10.2f", float64(n)/mib)
		}
		var anon, file uint64
		for i, m := range r.ms {
			if r.kinds[i] == smaps.Guest {
				continue
			}
			if m.FileBacked() {
				file += m.Rss
			} else {
				anon += m.Rss
			}
		}
		stats := r.stats
		if stats == "" {
			stats = "-"
		}
		fmt.Fprintf(w, " | %6.2f %6.2f %7.2f | %6.1f %7.1f %6.1f %8s", float64(anon)/mib, float64(file)/mib, float64(r.b.BeyondGuest())/mib,
			float64(r.peak)/mib, float64(r.peakAnon)/mib, float64(r.hwm)/mib, stats)
		if r.exitCode != 0 {
			fmt.Fprintf(w, "  (exit %d)", r.exitCode)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "anon/file: as --stats splits it (a path starting with / is a file); TOTAL = every mapping but guest RAM;")
	fmt.Fprintln(w, "peak: highest RssAnon+RssFile sampled, pk-anon: highest RssAnon sampled; hwm: VmHWM at exit (guest memory included); stats: what colibri --stats printed")
}

// printMappings lists r's n largest mappings outside guest memory.
func printMappings(w io.Writer, r result, n int) {
	idx := make([]int, 0, len(r.ms))
	for i := range r.ms {
		if r.kinds[i] != smaps.Guest && r.ms[i].Rss > 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return r.ms[idx[a]].Rss > r.ms[idx[b]].Rss })
	fmt.Fprintf(w, "\n%s (%s): largest mappings beyond guest memory\n", r.name, r.when)
	for _, i := range idx[:min(n, len(idx))] {
		m := r.ms[i]
		fmt.Fprintf(w, "  %8.0f KiB rss %8.0f KiB size  %-10s %012x %s %s\n", float64(m.Rss)/1024, float64(m.Size())/1024, r.kinds[i], m.Start, m.Perms, m.Path)
	}
}
