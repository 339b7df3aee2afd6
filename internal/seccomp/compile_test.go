package seccomp

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retTrap  = unix.SECCOMP_RET_TRAP
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retLog   = unix.SECCOMP_RET_LOG
	retNoSys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

func nr(t testing.TB, name string) uint32 {
	t.Helper()
	n, ok := sysnum(name)
	if !ok {
		t.Fatalf("no system call %q", name)
	}
	return n
}

func mustCompile(t testing.TB, f filter) []unix.SockFilter {
	t.Helper()
	prog, err := f.compile()
	if err != nil {
		t.Fatalf("%v\n%v", err, f)
	}
	return prog
}

// vmRun runs prog on d with golang.org/x/net/bpf's VM: it loads words
// big-endian (network order), so each of seccomp_data's words is handed
// to it byte-swapped.
func vmRun(t testing.TB, prog []unix.SockFilter, d data) uint32 {
	t.Helper()
	var vm *bpf.VM
	if v, ok := vms.Load(&prog[0]); ok {
		vm = v.(*bpf.VM)
	} else {
		raw := make([]bpf.RawInstruction, len(prog))
		for i, in := range prog {
			raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
		}
		insns, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatal("x/net/bpf cannot decode the program")
		}
		var err error
		if vm, err = bpf.NewVM(insns); err != nil {
			t.Fatalf("x/net/bpf refuses the program: %v", err)
		}
		vms.Store(&prog[0], vm)
	}
	le := d.bytes()
	be := make([]byte, len(le))
	for i := 0; i < len(le); i += 4 {
		binary.BigEndian.PutUint32(be[i:], binary.LittleEndian.Uint32(le[i:]))
	}
	v, err := vm.Run(be)
	if err != nil {
		t.Fatalf("x/net/bpf: %v", err)
	}
	return uint32(v)
}

// vms are x/net/bpf's VMs for the programs vmRun ran, by their first
// instruction.
var vms sync.Map

// answer runs prog on d with both interpreters and checks they agree.
func answer(t testing.TB, prog []unix.SockFilter, d data) (uint32, int) {
	t.Helper()
	got, steps, err := run(prog, d)
	if err != nil {
		t.Fatalf("%+v: %v\n%s", d, err, disasm(prog))
	}
	if vm := vmRun(t, prog, d); vm != got {
		t.Fatalf("%+v: the interpreter says %#x, x/net/bpf %#x", d, got, vm)
	}
	return got, steps
}

func call(n uint32, args ...uint64) data {
	d := data{nr: n, arch: unix.AUDIT_ARCH_X86_64, ip: 0x401000}
	copy(d.args[:], args)
	return d
}

// expect checks what f's program and f's rules say for each case.
func expect(t *testing.T, f filter, cases []expectCase) {
	t.Helper()
	prog := mustCompile(t, f)
	for _, c := range cases {
		got, _ := answer(t, prog, c.d)
		if got != c.want {
			t.Errorf("%s: program returns %#x, want %#x\n%v\n%s", c.what, got, c.want, f, disasm(prog))
		}
		if e := f.eval(c.d); e != c.want {
			t.Errorf("%s: the rules say %#x, want %#x (the test is wrong)", c.what, e, c.want)
		}
	}
}

type expectCase struct {
	what string
	d    data
	want uint32
}

func TestSysnum(t *testing.T) {
	for i := 1; i < len(sysnums); i++ {
		if sysnums[i-1].name >= sysnums[i].name {
			t.Fatalf("sysnums not sorted at %d: %q, %q", i, sysnums[i-1].name, sysnums[i].name)
		}
	}
	for _, c := range []struct {
		name string
		nr   uint32
	}{{"read", 0}, {"ioctl", 16}, {"_sysctl", 156}, {"clone", 56}, {"openat", 257}, {"clone3", 435}, {"epoll_pwait2", 441}} {
		if got, ok := sysnum(c.name); !ok || got != c.nr {
			t.Errorf("sysnum(%q) = %d, %v, want %d", c.name, got, ok, c.nr)
		}
	}
	for _, name := range []string{"", "Read", "read ", "nosuchcall", "zzz"} {
		if n, ok := sysnum(name); ok {
			t.Errorf("sysnum(%q) = %d", name, n)
		}
	}
}

func TestCompileAllowAndDefault(t *testing.T) {
	for _, def := range []uint32{retTrap, retKill, retLog} {
		f := filter{kind: Poller, def: def, rules: allow("read", "write", "getpid", "epoll_pwait2")}
		expect(t, f, []expectCase{
			{"read", call(0), retAllow},
			{"write", call(1), retAllow},
			{"getpid", call(nr(t, "getpid")), retAllow},
			{"epoll_pwait2, the highest listed", call(441), retAllow},
			{"open, between listed calls", call(2), def},
			{"openat", call(nr(t, "openat")), def},
			{"ioctl", call(16), def},
			{"past every number", call(442), def},
			{"nr 0x3fffffff", call(0x3fffffff), def},
		})
	}
}

func TestCompileArchAndX32(t *testing.T) {
	for _, def := range []uint32{retTrap, retLog} {
		f := filter{kind: Process, def: def, rules: allow("read", "ioctl")}
		i386 := call(3) // close on x86-64, exit on i386
		i386.arch = unix.AUDIT_ARCH_I386
		noArch := call(0)
		noArch.arch = 0
		expect(t, f, []expectCase{
			{"i386 call", i386, retKill},
			{"arch 0", noArch, retKill},
			{"x32 read", call(0x40000000), retNoSys},
			{"x32 ioctl", call(0x40000000 | 16), retNoSys},
			{"nr -1", call(0xffffffff), retNoSys},
			{"native read", call(0), retAllow},
			{"native ioctl", call(16), retAllow},
		})
	}
}

// Each kind of condition, with values that pass and fail in the high and
// the low 32 bits of a 64-bit argument.
func TestCompileConditions(t *testing.T) {
	const hiLo = 0x1_0000_0004
	for _, c := range []struct {
		cond   cond
		pass   []uint64
		fail   []uint64
		detail string
	}{
		{eq(1, hiLo), []uint64{hiLo}, []uint64{0x4, 0x3_0000_0004, 0x1_0000_0005, 0, 1 << 32}, "eq"},
		{eq(1, 0x4), []uint64{0x4}, []uint64{0x1_0000_0004, 0x5, 0xffffffff_00000004}, "eq, high word 0"},
		{eq(1, 0xffffffff_00000000), []uint64{0xffffffff_00000000}, []uint64{0, 0xffffffff_00000001, 0x7fffffff_00000000}, "eq, low word 0"},
		{bitsClear(1, hiLo), []uint64{0, 0x2_0000_0003, 0xfffffffe_fffffffb}, []uint64{1 << 32, 0x4, hiLo, ^uint64(0)}, "bitsClear"},
		{bitsClear(1, 0x4), []uint64{0, 0xffffffff_00000000, 0x3}, []uint64{0x4, 0x1_0000_0004}, "bitsClear, low word only"},
		{bitsClear(1, 1<<63), []uint64{0, 0xffffffff, 1 << 62}, []uint64{1 << 63, ^uint64(0)}, "bitsClear, high word only"},
		{bitsAny(1, hiLo), []uint64{1 << 32, 0x4, hiLo, ^uint64(0)}, []uint64{0, 0x2_0000_0003, 0xfffffffe_fffffffb}, "bitsAny"},
		{bitsAny(1, 0x4), []uint64{0x4, 0x5_0000_0004}, []uint64{0, 0xffffffff_00000000, 0x3}, "bitsAny, low word only"},
		{bitsAny(1, 1<<63), []uint64{1 << 63, ^uint64(0)}, []uint64{0, 0xffffffff, 1 << 62}, "bitsAny, high word only"},
	} {
		t.Run(c.detail, func(t *testing.T) {
			f := filter{kind: VCPU, def: retTrap, rules: append(allow("read"), when("fcntl", conds{c.cond}))}
			fcntl := nr(t, "fcntl")
			var cases []expectCase
			for _, v := range c.pass {
				cases = append(cases, expectCase{fmt.Sprintf("arg1 %#x", v), call(fcntl, 7, v, 9), retAllow})
			}
			for _, v := range c.fail {
				cases = append(cases, expectCase{fmt.Sprintf("arg1 %#x", v), call(fcntl, 7, v, 9), retTrap})
				// The argument's value in another argument changes nothing.
				cases = append(cases, expectCase{fmt.Sprintf("arg1 %#x, arg0 passing", v), call(fcntl, c.pass[0], v, c.pass[0]), retTrap})
			}
			expect(t, f, cases)
		})
	}
}

func TestCompileAndOr(t *testing.T) {
	prctl := nr(t, "prctl")
	f := filter{kind: Process, def: retKill, rules: []rule{
		// (a0 == 1 && a2 has no bit 0x10) || (a0 == 2 && a1 == 1<<32) || a3 has bit 1<<40
		when("prctl",
			conds{eq(0, 1), bitsClear(2, 0x10)},
			conds{eq(0, 2), eq(1, 1<<32)},
			conds{bitsAny(3, 1<<40)}),
		// anyOf: a run of single eq on one argument, two high words.
		when("socket", anyOf(0, 1, 2, 0x5_0000_0001, 0x5_0000_0002, 3)...),
		// A condition that always holds: the call needs no test.
		when("getpid", conds{bitsClear(0, 0)}),
		// A set that never holds, beside one that may.
		when("tgkill", conds{bitsAny(0, 0)}, conds{eq(0, 42)}),
		// Only sets that never hold: the call meets the default.
		when("uname", conds{bitsAny(1, 0), eq(0, 1)}),
		// No set, or an empty one: always.
		{name: "getppid", sets: []conds{}},
		when("gettid", conds{eq(0, 5)}, conds{}),
	}}
	socket := nr(t, "socket")
	expect(t, f, []expectCase{
		{"first set", call(prctl, 1, 0, 0xef), retAllow},
		{"first set, second condition fails", call(prctl, 1, 0, 0x10), retKill},
		{"second set", call(prctl, 2, 1<<32), retAllow},
		{"second set, low word of a1 differs", call(prctl, 2, 1<<32|1), retKill},
		{"second set, a1's high word in a0", call(prctl, 2, 1), retKill},
		{"third set alone", call(prctl, 99, 99, 0x10, 1<<40), retAllow},
		{"no set", call(prctl, 3, 1<<32, 0, 1<<39), retKill},
		{"socket 1", call(socket, 1), retAllow},
		{"socket 3, after the other high word", call(socket, 3), retAllow},
		{"socket 5<<32|2", call(socket, 0x5_0000_0002), retAllow},
		{"socket 5<<32|3", call(socket, 0x5_0000_0003), retKill},
		{"socket 1<<32|1", call(socket, 0x1_0000_0001), retKill},
		{"socket 4", call(socket, 4), retKill},
		{"getpid", call(nr(t, "getpid"), 1, 2, 3), retAllow},
		{"tgkill 42", call(nr(t, "tgkill"), 42), retAllow},
		{"tgkill 43", call(nr(t, "tgkill"), 43), retKill},
		{"uname", call(nr(t, "uname"), 1), retKill},
		{"getppid", call(nr(t, "getppid"), 1), retAllow},
		{"gettid", call(nr(t, "gettid"), 1), retAllow},
	})
}

// A call whose conditions fail meets the default: the filter does not
// go on comparing the argument it last loaded with call numbers (as
// go-seccomp-bpf v1.6.0's filters did).
func TestCompileFailedConditionsMeetDefault(t *testing.T) {
	ioctl, fcntl := nr(t, "ioctl"), nr(t, "fcntl")
	f := filter{kind: VCPU, def: retTrap, rules: append(allow("read", "write", "close", "poll", "fcntl"),
		when("ioctl", anyOf(1, kvmRun, kvmIRQLine)...),
		when("mmap", conds{bitsClear(2, unix.PROT_EXEC)}))}
	expect(t, f, []expectCase{
		{"ioctl request 0 (read's number)", call(ioctl, 5, 0), retTrap},
		{"ioctl request 3 (close's number)", call(ioctl, 5, 3), retTrap},
		{"ioctl request fcntl's number", call(ioctl, 5, uint64(fcntl)), retTrap},
		{"mmap PROT_READ|PROT_WRITE|PROT_EXEC (poll's number)", call(nr(t, "mmap"), 0, 4096, 7), retTrap},
		{"mmap PROT_READ|PROT_WRITE", call(nr(t, "mmap"), 0, 4096, 3), retAllow},
		{"KVM_RUN", call(ioctl, 5, kvmRun), retAllow},
	})
}

func TestCompileClone3(t *testing.T) {
	f, err := policy(Process, Options{}, 1234)
	if err != nil {
		t.Fatal(err)
	}
	clone := nr(t, "clone")
	expect(t, f, []expectCase{
		{"clone3", call(nr(t, "clone3"), 0x1000, 88), retNoSys},
		{"clone of a thread", call(clone, unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|unix.CLONE_THREAD|unix.CLONE_SYSVSEM), retAllow},
		{"clone of a process (fork)", call(clone, uint64(unix.SIGCHLD)), retTrap},
		{"execve", call(nr(t, "execve")), retTrap},
		{"tgkill to this process", call(nr(t, "tgkill"), 1234, 1235, uint64(unix.SIGURG)), retAllow},
		{"tgkill to another", call(nr(t, "tgkill"), 1, 1, uint64(unix.SIGURG)), retTrap},
		{"tgkill, pid in the high word", call(nr(t, "tgkill"), 1234<<32|1234, 1, 9), retTrap},
	})
	for _, k := range []Kind{VCPU, Poller, Scheduler} {
		f, err := policy(k, Options{}, 1234)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, f, []expectCase{{k.String() + ": clone3", call(nr(t, "clone3")), retTrap}})
	}
}

// The hot call comes right after the arch and ABI checks, and KVM_RUN
// is decided in a few instructions in both of a vCPU thread's filters.
func TestCompileHotCallFirst(t *testing.T) {
	for _, k := range []Kind{Process, VCPU} {
		f, err := policy(k, Options{}, 1234)
		if err != nil {
			t.Fatal(err)
		}
		prog := mustCompile(t, f)
		if in := prog[6]; in.Code != bpfJeq || in.K != 16 {
			t.Errorf("%v: instruction 6 is %+v, not the test for ioctl\n%s", k, in, disasm(prog))
		}
		got, steps := answer(t, prog, call(16, 9, kvmRun))
		if got != retAllow || steps > 13 {
			t.Errorf("%v: KVM_RUN: %#x after %d instructions\n%s", k, got, steps, disasm(prog))
		}
		t.Logf("%v: KVM_RUN allowed after %d instructions", k, steps)
	}
}

// Every call a list names is decided in a number of instructions that
// grows with the log of the list's length, not with the length.
func TestCompileBinarySearch(t *testing.T) {
	f, err := policy(Process, Options{API: true, DropTo: &IDs{UID: 1, GID: 1}}, 1234)
	if err != nil {
		t.Fatal(err)
	}
	prog := mustCompile(t, f)
	worst := 0
	for _, r := range f.rules {
		if len(r.sets) > 0 || r.name == hotCall {
			continue
		}
		_, steps := answer(t, prog, call(nr(t, r.name)))
		worst = max(worst, steps)
	}
	// 6 for the checks before the search, then the search: about
	// log2(2 * calls) comparisons, and the return.
	if worst > 6+10+1 {
		t.Errorf("an unconditional call of the process list (%d calls) takes %d instructions", len(f.rules), worst)
	}
	t.Logf("process list: %d calls, %d instructions, an unconditional call decided in %d at most", len(f.rules), len(prog), worst)
}

// longFilter names every system call of amd64, one in every condEvery
// with perCall condition sets: its program's jumps go further than 255
// instructions.
func longFilter(perCall, condEvery int) filter {
	f := filter{kind: Process, def: retTrap}
	for i, s := range sysnums {
		var sets []conds
		for j := range perCall {
			v := uint64(i)<<32 | uint64(j)
			sets = append(sets, conds{bitsAny(j%6, v|1<<20), eq((j+1)%6, v)})
		}
		r := when(s.name, sets...)
		if i%condEvery != 0 {
			r = rule{name: s.name}
		}
		if i%11 == 0 {
			r.errno = unix.Errno(1 + i%100)
		}
		f.rules = append(f.rules, r)
	}
	return f
}

func TestCompileLongJumps(t *testing.T) {
	f := longFilter(2, 3)
	prog := mustCompile(t, f)
	long := 0
	for _, in := range prog {
		if in.Code == bpfJa {
			long++
		}
	}
	if long == 0 || len(prog) < 1000 {
		t.Fatalf("%d instructions, %d long jumps: the test does not test long jumps", len(prog), long)
	}
	t.Logf("%d instructions, %d long jumps", len(prog), long)
	// Every call, with arguments that pass each set, fail it in the high
	// word, fail it in the low word.
	for _, r := range f.rules {
		n := nr(t, r.name)
		want := want(r)
		var cases []data
		if len(r.sets) == 0 {
			cases = append(cases, call(n, 1, 2, 3))
		}
		for _, s := range r.sets {
			var d data
			for _, c := range s {
				if c.op == opEq {
					d.args[c.arg] = c.val
				} else {
					d.args[c.arg] |= c.val
				}
			}
			pass := call(n, d.args[:]...)
			hi, lo := pass, pass
			eqArg := s[1].arg
			hi.args[eqArg] ^= 1 << 40
			lo.args[eqArg] ^= 1 << 7
			cases = append(cases, pass, hi, lo)
		}
		for _, d := range cases {
			got, _ := answer(t, prog, d)
			if e := f.eval(d); got != e {
				t.Fatalf("%s %+v: program %#x, rules %#x", r.name, d, got, e)
			}
			if d == cases[0] && got != want {
				t.Fatalf("%s %+v: %#x, want %#x", r.name, d, got, want)
			}
		}
	}
}

// want is what a call that r lets through meets.
func want(r rule) uint32 {
	if r.errno != 0 {
		return unix.SECCOMP_RET_ERRNO | uint32(r.errno)
	}
	return retAllow
}

func TestCompileTooLong(t *testing.T) {
	_, err := longFilter(8, 1).compile()
	if err == nil || !strings.Contains(err.Error(), "the process list") || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("a program of more than 4096 instructions: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct {
		rules []rule
		want  string
	}{
		{allow("read", "nosuchcall"), `unknown system call "nosuchcall"`},
		{allow("read", "read"), "read listed twice"},
		{[]rule{when("read", conds{eq(6, 0)})}, "argument 6"},
		{[]rule{when("read", conds{{arg: 0, op: 9}})}, "unknown condition"},
		{[]rule{{name: "read", errno: 1 << 16}}, "errno 65536"},
	} {
		_, err := filter{kind: Scheduler, def: retTrap, rules: c.rules}.compile()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "the scheduler list") {
			t.Errorf("%v: error %v, want one with %q", c.rules, err, c.want)
		}
	}
	if _, err := merge([]rule{{name: "clone3", errno: unix.ENOSYS}, {name: "clone3"}}); err == nil {
		t.Error("merge took clone3 both allowed and refused")
	}
}

func TestCheck(t *testing.T) {
	ok := []unix.SockFilter{{Code: bpfLd, K: 4}, {Code: bpfJeq, Jt: 0, Jf: 1, K: 1}, {Code: bpfRet}, {Code: bpfRet, K: retAllow}}
	if err := check(ok); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(p []unix.SockFilter) []unix.SockFilter{
		"jump past the end": func(p []unix.SockFilter) []unix.SockFilter { p[1].Jf = 2; return p },
		"ja past the end":   func(p []unix.SockFilter) []unix.SockFilter { p[2] = unix.SockFilter{Code: bpfJa, K: 1}; return p },
		"unaligned load":    func(p []unix.SockFilter) []unix.SockFilter { p[0].K = 2; return p },
		"load past the end": func(p []unix.SockFilter) []unix.SockFilter { p[0].K = 64; return p },
		"no final return":   func(p []unix.SockFilter) []unix.SockFilter { return p[:2] },
		"other opcode":      func(p []unix.SockFilter) []unix.SockFilter { p[0].Code = unix.BPF_LDX; return p },
		"too long":          func(p []unix.SockFilter) []unix.SockFilter { return append(make([]unix.SockFilter, 4096), p...) },
		"empty":             func(p []unix.SockFilter) []unix.SockFilter { return nil },
	} {
		if err := check(mod(append([]unix.SockFilter(nil), ok...))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAssembleRefusesBackwardJumps(t *testing.T) {
	var a asm
	l := a.newLabel()
	a.bind(l)
	a.ld(0)
	a.jump(bpfJeq, 1, l, next)
	a.ret(0)
	if _, err := a.assemble(); err == nil {
		t.Fatal("a backward jump was assembled")
	}
	var b asm
	b.ja(b.newLabel())
	b.ret(0)
	if _, err := b.assemble(); err == nil {
		t.Fatal("a jump to an unbound label was assembled")
	}
}

// Every list, every call it names, every condition set: passing
// arguments, and each argument a set tests changed in one bit of its
// high and of its low word.
func TestListsAgainstRules(t *testing.T) {
	for _, opts := range []Options{{}, {Action: Kill, API: true}, {Action: Log, DropTo: &IDs{UID: 65534, GID: 65534}}} {
		for _, k := range Kinds() {
			f, err := policy(k, opts, 4321)
			if err != nil {
				t.Fatal(err)
			}
			prog := mustCompile(t, f)
			verify := func(d data) uint32 {
				got, _ := answer(t, prog, d)
				if e := f.eval(d); got != e {
					t.Fatalf("%v %+v: %+v: program %#x, rules %#x", k, opts, d, got, e)
				}
				return got
			}
			for _, r := range f.rules {
				n := nr(t, r.name)
				if len(r.sets) == 0 {
					verify(call(n, ^uint64(0), ^uint64(0), ^uint64(0)))
					continue
				}
				for _, s := range r.sets {
					var args [6]uint64
					for _, c := range s {
						if c.op == opBitsAny || c.op == opEq {
							args[c.arg] |= c.val
						}
					}
					if got := verify(call(n, args[:]...)); got != want(r) {
						t.Errorf("%v: %s %x: %#x, want allowed", k, r.name, args, got)
					}
					for _, c := range s {
						for _, bit := range []uint{3, 8, 12, 33, 63} {
							d := call(n, args[:]...)
							d.args[c.arg] ^= 1 << bit
							verify(d)
						}
					}
				}
			}
			for n := uint32(0); n < 470; n++ {
				verify(call(n))
				verify(call(n, 1, 1<<32, 0xae80, 4, 5, 6))
			}
		}
	}
}

// fuzzFilters are the filters FuzzFilter runs: every list under a few
// options, and one with every kind of condition.
var fuzzFilters = sync.OnceValue(func() []fuzzFilter {
	var out []fuzzFilter
	add := func(f filter) {
		prog, err := f.compile()
		if err != nil {
			panic(err)
		}
		ff := fuzzFilter{f: f, prog: prog}
		for _, r := range f.rules {
			n, _ := sysnum(r.name)
			ff.nrs = append(ff.nrs, n)
			for _, s := range r.sets {
				for _, c := range s {
					ff.vals = append(ff.vals, c.val)
				}
			}
		}
		sort.Slice(ff.nrs, func(i, j int) bool { return ff.nrs[i] < ff.nrs[j] })
		ff.vals = append(ff.vals, 0, ^uint64(0))
		out = append(out, ff)
	}
	for _, opts := range []Options{{}, {Action: Kill, API: true}, {Action: Log, DropTo: &IDs{UID: 1000, GID: 100}}} {
		for _, k := range Kinds() {
			f, err := policy(k, opts, 777)
			if err != nil {
				panic(err)
			}
			add(f)
		}
	}
	add(filter{kind: Poller, def: retTrap, rules: []rule{
		when("ioctl", conds{bitsAny(1, 0x1_0000_0200), bitsClear(1, 0x2_0000_0400)}, conds{eq(1, 0x3_0000_0005)}),
		when("read", conds{bitsAny(0, 1<<63)}, conds{bitsClear(0, 0xffff_0000_0000), eq(2, 9)}),
		{name: "write"}, {name: "clone3", errno: unix.ENOSYS}, {name: "openat", errno: unix.EACCES},
		when("mmap", anyOf(3, 1, 2, 3, 1<<32|1, 1<<32|2)...),
	}})
	add(longFilter(2, 3))
	return out
})

type fuzzFilter struct {
	f    filter
	prog []unix.SockFilter
	nrs  []uint32 // the numbers it names
	vals []uint64 // the values its conditions test
}

// FuzzFilter runs filters on seccomp_data made from the fuzzer's input
// and compares their answers with the rules'. sel picks the filter (low
// 4 bits) and how the input is used: bit 4, nr picks one of the numbers
// the filter names; bit 5, the arch is x86-64 whatever arch says; bit
// 6, each argument is one of the values the conditions test, picked by
// the argument's value, with bit 7 one bit of it flipped.
func FuzzFilter(f *testing.F) {
	f.Fuzz(func(t *testing.T, sel uint8, nr, arch uint32, a0, a1, a2, a3, a4, a5 uint64) {
		ffs := fuzzFilters()
		ff := ffs[int(sel&0x0f)%len(ffs)]
		d := data{nr: nr, arch: arch, args: [6]uint64{a0, a1, a2, a3, a4, a5}}
		if sel&0x10 != 0 {
			d.nr = ff.nrs[nr%uint32(len(ff.nrs))]
		}
		if sel&0x20 != 0 {
			d.arch = unix.AUDIT_ARCH_X86_64
		}
		if sel&0x40 != 0 {
			for i, a := range d.args {
				d.args[i] = ff.vals[a%uint64(len(ff.vals))]
				if sel&0x80 != 0 {
					d.args[i] ^= 1 << (a >> 58)
				}
			}
		}
		got, _ := answer(t, ff.prog, d)
		if want := ff.f.eval(d); got != want {
			t.Fatalf("%+v: program %#x, rules %#x\n%v\n%s", d, got, want, ff.f, disasm(ff.prog))
		}
	})
}
