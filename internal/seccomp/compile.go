package seccomp

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// A filter is one kind's list as the compiler takes it: the calls it
// lets through (or answers with an errno), each at most once, and what
// every other call meets.
type filter struct {
	kind  Kind
	def   uint32 // SECCOMP_RET_TRAP, _KILL_PROCESS or _LOG
	rules []rule
}

func (f filter) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v list, default %#x:\n", f.kind, f.def)
	for _, r := range f.rules {
		b.WriteString("  " + r.name)
		if r.errno != 0 {
			fmt.Fprintf(&b, " -> errno %d", int(r.errno))
		}
		for i, s := range r.sets {
			if i > 0 {
				b.WriteString(" ||")
			}
			for j, c := range s {
				if j > 0 {
					b.WriteString(" &&")
				}
				fmt.Fprintf(&b, " arg%d %v %#x", c.arg, c.op, c.val)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// sysent is a system call's name and number.
type sysent struct {
	name string
	nr   uint16
}

// sysnum is the number of the system call named name on amd64.
func sysnum(name string) (uint32, bool) {
	i := sort.Search(len(sysnums), func(i int) bool { return sysnums[i].name >= name })
	if i < len(sysnums) && sysnums[i].name == name {
		return uint32(sysnums[i].nr), true
	}
	return 0, false
}

// seccomp_data (include/uapi/linux/seccomp.h), as the filter reads it:
// 32-bit loads of native-endian (little-endian) fields.
const (
	offNr    = 0  // int nr
	offArch  = 4  // __u32 arch
	offArgs  = 16 // __u64 args[6], after __u64 instruction_pointer
	dataSize = 64

	// x32Bit marks an x32 system call (__X32_SYSCALL_BIT): the same arch
	// as x86-64, another ABI.
	x32Bit = 0x40000000
	// maxInsns is the kernel's limit on a filter's length (BPF_MAXINSNS).
	maxInsns = 4096
	// hotCall is tested before every other call: vCPU threads make an
	// ioctl (KVM_RUN) per VM exit.
	hotCall = "ioctl"
)

func argLo(arg int) uint32 { return offArgs + 8*uint32(arg) }
func argHi(arg int) uint32 { return argLo(arg) + 4 }

// The classic BPF instructions a filter is made of.
const (
	bpfLd   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS // A = data[k]
	bpfJa   = unix.BPF_JMP | unix.BPF_JA              // pc += k
	bpfJeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	bpfJset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K // A & k != 0
	bpfRet  = unix.BPF_RET | unix.BPF_K
)

// compile assembles f into a seccomp program. It runs, in order:
//
//   - the arch check: a call of another arch than x86-64 (int 0x80 from
//     a 64-bit process) kills the process;
//   - x32 calls (number with x32Bit) fail with ENOSYS;
//   - the hot call, if f has it, and its conditions;
//   - a binary search on the call's number over the ranges of numbers
//     that share an outcome (allow, an errno, the default, or a rule's
//     conditions), so that any call is found in about log2(ranges)
//     comparisons;
//   - the conditions of each rule that has any: its condition sets in
//     order, each a run of 32-bit tests (an argument's high word, then
//     its low word), the first that holds giving the rule's answer, the
//     default if none does.
//
// Conditional jumps reach 255 instructions at most: the assembler puts
// a long jump (or a copy of the target's return) after one that has to
// go further.
func (f filter) compile() ([]unix.SockFilter, error) {
	prog, err := f.compileProg()
	if err != nil {
		return nil, fmt.Errorf("seccomp: the %v list: %w", f.kind, err)
	}
	return prog, nil
}

func (f filter) compileProg() ([]unix.SockFilter, error) {
	type entry struct {
		nr uint32
		r  *rule
	}
	var entries []entry
	seen := map[uint32]bool{}
	for i := range f.rules {
		r := &f.rules[i]
		nr, ok := sysnum(r.name)
		if !ok {
			return nil, fmt.Errorf("unknown system call %q", r.name)
		}
		if seen[nr] {
			return nil, fmt.Errorf("%s listed twice", r.name)
		}
		seen[nr] = true
		if r.errno > unix.SECCOMP_RET_DATA {
			return nil, fmt.Errorf("%s: errno %d out of range", r.name, int(r.errno))
		}
		for _, s := range r.sets {
			for _, c := range s {
				if c.arg < 0 || c.arg > 5 {
					return nil, fmt.Errorf("%s: argument %d (a call has 0 to 5)", r.name, c.arg)
				}
				if c.op < opEq || c.op > opBitsAny {
					return nil, fmt.Errorf("%s: unknown condition %v", r.name, c.op)
				}
			}
		}
		sets, always := simplify(r.sets)
		if !always && len(sets) == 0 {
			continue // no set can hold: the call meets the default
		}
		entries = append(entries, entry{nr, &rule{name: r.name, sets: sets, errno: r.errno}})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].nr < entries[j].nr })

	c := compiler{def: f.def, rets: map[uint32]label{}}
	a := &c.a
	answer := func(r *rule) uint32 {
		if r.errno != 0 {
			return unix.SECCOMP_RET_ERRNO | uint32(r.errno)
		}
		return unix.SECCOMP_RET_ALLOW
	}

	// The arch, then the ABI.
	a.ld(offArch)
	native := a.newLabel()
	a.jump(bpfJeq, auditArch, native, next)
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)
	a.bind(native)
	a.ld(offNr)
	x86 := a.newLabel()
	a.jump(bpfJge, x32Bit, next, x86)
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	a.bind(x86)

	// The hot call.
	hot, _ := sysnum(hotCall)
	hasHot := false
	for _, e := range entries {
		if e.nr == hot {
			hasHot = true
			if len(e.r.sets) == 0 {
				a.jump(bpfJeq, hot, c.retLabel(answer(e.r)), next)
			} else {
				other := a.newLabel()
				a.jump(bpfJeq, hot, next, other)
				c.block(e.r.sets, answer(e.r))
				a.bind(other) // A is the call's number again here
			}
		}
	}

	// The outcome of each number from 0 to the last one listed (every
	// number past it meets the default), the hot call's being whatever
	// suits its neighbours (it never gets here).
	var last uint32
	if len(entries) > 0 {
		last = entries[len(entries)-1].nr
	}
	defLabel := c.retLabel(f.def)
	outcome := make([]label, last+2)
	for i := range outcome {
		outcome[i] = defLabel
	}
	type pending struct {
		l    label
		sets []conds
		ret  uint32
	}
	var blocks []pending
	for _, e := range entries {
		switch {
		case hasHot && e.nr == hot:
			outcome[e.nr] = dontCare
		case len(e.r.sets) == 0:
			outcome[e.nr] = c.retLabel(answer(e.r))
		default:
			l := a.newLabel()
			blocks = append(blocks, pending{l, e.r.sets, answer(e.r)})
			outcome[e.nr] = l
		}
	}
	for i, l := range outcome {
		if l == dontCare {
			outcome[i] = defLabel
			if i > 0 {
				outcome[i] = outcome[i-1] // one range with the previous
			}
		}
	}
	var ranges []numRange
	for i, l := range outcome {
		if len(ranges) == 0 || ranges[len(ranges)-1].to != l {
			ranges = append(ranges, numRange{from: uint32(i), to: l})
		}
	}
	c.search(ranges)

	// The shared returns, then the rules' conditions.
	for _, v := range c.retOrder {
		a.bind(c.rets[v])
		a.ret(v)
	}
	for _, b := range blocks {
		a.bind(b.l)
		c.block(b.sets, b.ret)
	}

	prog, err := a.assemble()
	if err != nil {
		return nil, err
	}
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("assembles to %d instructions, more than the kernel's %d", len(prog), maxInsns)
	}
	if err := check(prog); err != nil {
		return nil, fmt.Errorf("assembled program: %w", err)
	}
	return prog, nil
}

// simplify drops the conditions that always hold (no bit to test clear)
// and the sets that never do (no bit to find set). always reports a set
// left empty: the call needs no test.
func simplify(sets []conds) (out []conds, always bool) {
	if len(sets) == 0 {
		return nil, true
	}
	for _, s := range sets {
		var keep conds
		never := false
		for _, c := range s {
			switch {
			case c.op == opBitsClear && c.val == 0:
				continue
			case c.op == opBitsAny && c.val == 0:
				never = true
			}
			keep = append(keep, c)
		}
		if never {
			continue
		}
		if len(keep) == 0 {
			return nil, true
		}
		out = append(out, keep)
	}
	return out, false
}

// numRange is the call numbers from 'from' up to the next range's start,
// and where they go.
type numRange struct {
	from uint32
	to   label
}

type compiler struct {
	a        asm
	def      uint32
	rets     map[uint32]label // shared return instructions, by value
	retOrder []uint32
}

// retLabel is the label of the shared instruction returning v.
func (c *compiler) retLabel(v uint32) label {
	l, ok := c.rets[v]
	if !ok {
		l = c.a.newLabel()
		c.rets[v] = l
		c.retOrder = append(c.retOrder, v)
	}
	return l
}

// search emits a binary search of A (the call's number) over ranges,
// sorted, the first starting at 0: each comparison halves the ranges
// left, and where one is left control goes to its label.
func (c *compiler) search(ranges []numRange) {
	if len(ranges) == 1 {
		c.a.ja(ranges[0].to)
		return
	}
	c.split(ranges)
}

func (c *compiler) split(ranges []numRange) {
	mid := len(ranges) / 2
	lo, hi := ranges[:mid], ranges[mid:]
	jt, jf := next, next
	if len(hi) == 1 {
		jt = hi[0].to
	} else {
		jt = c.a.newLabel()
	}
	if len(lo) == 1 {
		jf = lo[0].to
	}
	c.a.jump(bpfJge, hi[0].from, jt, jf)
	if len(lo) > 1 {
		c.split(lo)
	}
	if len(hi) > 1 {
		c.a.bind(jt)
		c.split(hi)
	}
}

// block emits a rule's conditions: each set in turn, returning ret as
// soon as one holds, the default if none does.
//
// A run of sets that are each one eq on the same argument with the same
// high word (anyOf: ioctl requests, prctl options) is tested as one: the
// high word once, then the low word against each value.
func (c *compiler) block(sets []conds, ret uint32) {
	a := &c.a
	for i := 0; i < len(sets); {
		fail := a.newLabel()
		j := i + 1
		if single := len(sets[i]) == 1 && sets[i][0].op == opEq; single {
			for j < len(sets) && len(sets[j]) == 1 && sets[j][0].op == opEq &&
				sets[j][0].arg == sets[i][0].arg && sets[j][0].val>>32 == sets[i][0].val>>32 {
				j++
			}
		}
		if j-i == 1 {
			for _, cd := range sets[i] {
				c.cond(cd, fail)
			}
		} else {
			arg := sets[i][0].arg
			pass := a.newLabel()
			a.ld(argHi(arg))
			a.jump(bpfJeq, uint32(sets[i][0].val>>32), next, fail)
			a.ld(argLo(arg))
			for k := i; k < j-1; k++ {
				a.jump(bpfJeq, uint32(sets[k][0].val), pass, next)
			}
			a.jump(bpfJeq, uint32(sets[j-1][0].val), next, fail)
			a.bind(pass)
		}
		a.ret(ret)
		a.bind(fail)
		i = j
	}
	a.ret(c.def)
}

// cond emits the test of cd, going on with the next instruction if it
// holds and to fail if not. A 64-bit argument is two 32-bit words: the
// test looks at the high word, then the low word, and skips a word that
// the value leaves no bit to test in.
func (c *compiler) cond(cd cond, fail label) {
	a := &c.a
	hi, lo := uint32(cd.val>>32), uint32(cd.val)
	switch cd.op {
	case opEq:
		a.ld(argHi(cd.arg))
		a.jump(bpfJeq, hi, next, fail)
		a.ld(argLo(cd.arg))
		a.jump(bpfJeq, lo, next, fail)
	case opBitsClear:
		if hi != 0 {
			a.ld(argHi(cd.arg))
			a.jump(bpfJset, hi, fail, next)
		}
		if lo != 0 {
			a.ld(argLo(cd.arg))
			a.jump(bpfJset, lo, fail, next)
		}
	case opBitsAny:
		switch {
		case hi != 0 && lo != 0:
			pass := a.newLabel()
			a.ld(argHi(cd.arg))
			a.jump(bpfJset, hi, pass, next)
			a.ld(argLo(cd.arg))
			a.jump(bpfJset, lo, next, fail)
			a.bind(pass)
		case hi != 0:
			a.ld(argHi(cd.arg))
			a.jump(bpfJset, hi, next, fail)
		case lo != 0:
			a.ld(argLo(cd.arg))
			a.jump(bpfJset, lo, next, fail)
		default: // simplify dropped these sets
			a.ja(fail)
		}
	}
}

// label names an instruction to jump to, once bound.
type label int

const (
	// next is the instruction after the jump.
	next label = -1
	// dontCare is an outcome that may be anything.
	dontCare label = -2
)

// insn is an instruction before jumps are laid out: jt and jf (a
// conditional jump) or jt (bpfJa) are labels.
type insn struct {
	code   uint16
	k      uint32
	jt, jf label
}

// asm collects instructions with symbolic forward jumps and lays them
// out.
type asm struct {
	insns []insn
	at    []int // label -> index of the instruction it marks, -1 unbound
	// loaded is the offset A was last loaded from when the next
	// instruction can only be reached by falling through (-1 if not
	// known): a load of the same word again is left out.
	loaded int
}

func (a *asm) newLabel() label {
	a.at = append(a.at, -1)
	return label(len(a.at) - 1)
}

// bind marks the next instruction with l.
func (a *asm) bind(l label) {
	a.at[l] = len(a.insns)
	a.loaded = -1
}

func (a *asm) ld(off uint32) {
	if a.loaded == int(off) {
		return
	}
	a.insns = append(a.insns, insn{code: bpfLd, k: off})
	a.loaded = int(off)
}

func (a *asm) jump(code uint16, k uint32, jt, jf label) {
	a.insns = append(a.insns, insn{code: code, k: k, jt: jt, jf: jf})
}

func (a *asm) ja(l label) {
	a.insns = append(a.insns, insn{code: bpfJa, jt: l})
	a.loaded = -1
}

func (a *asm) ret(v uint32) {
	a.insns = append(a.insns, insn{code: bpfRet, k: v})
	a.loaded = -1
}

// assemble lays the instructions out. A conditional jump's branch that
// would skip more than 255 instructions goes instead to an instruction
// put right after the jump: a copy of the target if it is a return, else
// a long jump (bpfJa, 32-bit offset). Adding those moves the others, so
// it is repeated until every branch fits; branches only grow, so it
// ends.
func (a *asm) assemble() ([]unix.SockFilter, error) {
	n := len(a.insns)
	if n == 0 {
		return nil, errors.New("empty program")
	}
	target := func(i int, l label) (int, error) {
		if l == next {
			return i + 1, nil
		}
		if l < 0 || int(l) >= len(a.at) || a.at[l] < 0 {
			return 0, fmt.Errorf("instruction %d jumps to label %d, which is not bound", i, l)
		}
		t := a.at[l]
		if t <= i || t >= n {
			return 0, fmt.Errorf("instruction %d jumps to instruction %d: not forward within the program", i, t)
		}
		return t, nil
	}
	cond := func(in insn) bool { return in.code&0x07 == unix.BPF_JMP && in.code != bpfJa }

	targets := make([][2]int, n)
	for i, in := range a.insns {
		var err error
		switch {
		case cond(in):
			if targets[i][0], err = target(i, in.jt); err == nil {
				targets[i][1], err = target(i, in.jf)
			}
		case in.code == bpfJa:
			targets[i][0], err = target(i, in.jt)
		}
		if err != nil {
			return nil, err
		}
	}
	if a.insns[n-1].code != bpfRet {
		return nil, errors.New("the program does not end with a return")
	}

	far := make([][2]bool, n)
	pos := make([]int, n+1)
	for {
		p := 0
		for i := range a.insns {
			pos[i] = p
			p++
			for _, f := range far[i] {
				if f {
					p++
				}
			}
		}
		pos[n] = p
		changed := false
		for i, in := range a.insns {
			if !cond(in) {
				continue
			}
			for b := range 2 {
				if !far[i][b] && pos[targets[i][b]]-(pos[i]+1) > 255 {
					far[i][b] = true
					changed = true
				}
			}
		}
		if !changed {
			break
		}
	}

	out := make([]unix.SockFilter, 0, pos[n])
	for i, in := range a.insns {
		switch {
		case cond(in):
			var off [2]uint8
			var extra []int // targets of the instructions after this one
			for b := range 2 {
				t := targets[i][b]
				if far[i][b] {
					off[b] = uint8(len(extra))
					extra = append(extra, t)
				} else {
					off[b] = uint8(pos[t] - (pos[i] + 1))
				}
			}
			out = append(out, unix.SockFilter{Code: in.code, Jt: off[0], Jf: off[1], K: in.k})
			for _, t := range extra {
				if a.insns[t].code == bpfRet {
					out = append(out, unix.SockFilter{Code: bpfRet, K: a.insns[t].k})
				} else {
					out = append(out, unix.SockFilter{Code: bpfJa, K: uint32(pos[t] - (len(out) + 1))})
				}
			}
		case in.code == bpfJa:
			out = append(out, unix.SockFilter{Code: bpfJa, K: uint32(pos[targets[i][0]] - (pos[i] + 1))})
		default:
			out = append(out, unix.SockFilter{Code: in.code, K: in.k})
		}
	}
	return out, nil
}

// check verifies what the kernel will (bpf_check_classic and
// seccomp_check_filter, for the instructions a filter here is made of):
// known instructions only, 32-bit loads of seccomp_data's words, every
// jump forward and within the program, a return at its end.
func check(prog []unix.SockFilter) error {
	n := len(prog)
	if n == 0 || n > maxInsns {
		return fmt.Errorf("%d instructions (the kernel takes 1 to %d)", n, maxInsns)
	}
	for i, in := range prog {
		switch in.Code {
		case bpfLd:
			if in.K%4 != 0 || in.K >= dataSize {
				return fmt.Errorf("instruction %d loads offset %d of seccomp_data", i, in.K)
			}
		case bpfJa:
			if uint64(i)+1+uint64(in.K) >= uint64(n) {
				return fmt.Errorf("instruction %d jumps %d past the end", i, in.K)
			}
		case bpfJeq, bpfJge, bpfJset:
			if i+1+int(in.Jt) >= n || i+1+int(in.Jf) >= n {
				return fmt.Errorf("instruction %d jumps (%d, %d) past the end", i, in.Jt, in.Jf)
			}
		case bpfRet:
		default:
			return fmt.Errorf("instruction %d: opcode %#x", i, in.Code)
		}
	}
	if prog[n-1].Code != bpfRet {
		return errors.New("the program does not end with a return")
	}
	return nil
}
