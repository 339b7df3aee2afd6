package seccomp

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// data is a seccomp_data as the kernel hands it to a filter.
type data struct {
	nr   uint32
	arch uint32
	ip   uint64
	args [6]uint64
}

// bytes is d laid out as in memory on amd64 (little-endian).
func (d data) bytes() []byte {
	b := make([]byte, dataSize)
	binary.LittleEndian.PutUint32(b[offNr:], d.nr)
	binary.LittleEndian.PutUint32(b[offArch:], d.arch)
	binary.LittleEndian.PutUint64(b[8:], d.ip)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(b[offArgs+8*i:], a)
	}
	return b
}

// run interprets a seccomp program on d as the kernel would, checking as
// it goes what the kernel checks when it takes the filter: only the
// instructions a seccomp filter may use (of which only those colibri's
// compiler emits are known here), aligned 32-bit loads inside
// seccomp_data, forward jumps inside the program. It returns the value
// of the return instruction reached and the number of instructions run.
func run(prog []unix.SockFilter, d data) (ret uint32, steps int, err error) {
	mem := d.bytes()
	var A uint32
	for pc := 0; ; pc++ {
		if pc < 0 || pc >= len(prog) {
			return 0, steps, fmt.Errorf("pc %d outside the program (%d instructions)", pc, len(prog))
		}
		steps++
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if in.K%4 != 0 || in.K+4 > dataSize {
				return 0, steps, fmt.Errorf("pc %d: load of offset %d", pc, in.K)
			}
			A = binary.LittleEndian.Uint32(mem[in.K:])
		case unix.BPF_JMP | unix.BPF_JA:
			if uint64(pc)+1+uint64(in.K) >= uint64(len(prog)) {
				return 0, steps, fmt.Errorf("pc %d: ja %d out of the program", pc, in.K)
			}
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			var taken bool
			switch in.Code & 0xf0 {
			case unix.BPF_JEQ:
				taken = A == in.K
			case unix.BPF_JGT:
				taken = A > in.K
			case unix.BPF_JGE:
				taken = A >= in.K
			case unix.BPF_JSET:
				taken = A&in.K != 0
			}
			off := in.Jf
			if taken {
				off = in.Jt
			}
			pc += int(off)
		case unix.BPF_RET | unix.BPF_K:
			return in.K, steps, nil
		default:
			return 0, steps, fmt.Errorf("pc %d: opcode %#x", pc, in.Code)
		}
	}
}

// disasm lists prog, one instruction a line, for failure messages.
func disasm(prog []unix.SockFilter) string {
	var b strings.Builder
	for i, in := range prog {
		fmt.Fprintf(&b, "%4d: ", i)
		switch in.Code {
		case bpfLd:
			fmt.Fprintf(&b, "ld [%d]", in.K)
		case bpfJa:
			fmt.Fprintf(&b, "ja %d", i+1+int(in.K))
		case bpfJeq, bpfJge, bpfJset:
			name := map[uint16]string{bpfJeq: "jeq", bpfJge: "jge", bpfJset: "jset"}[in.Code]
			fmt.Fprintf(&b, "%s %#x, %d, %d", name, in.K, i+1+int(in.Jt), i+1+int(in.Jf))
		case bpfRet:
			fmt.Fprintf(&b, "ret %#x", in.K)
		default:
			fmt.Fprintf(&b, "op %#x %d %d %#x", in.Code, in.Jt, in.Jf, in.K)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// eval is what f answers for d, evaluated from the rules directly.
func (f filter) eval(d data) uint32 {
	if d.arch != unix.AUDIT_ARCH_X86_64 {
		return unix.SECCOMP_RET_KILL_PROCESS
	}
	if d.nr >= 0x40000000 {
		return unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	}
	for _, r := range f.rules {
		nr, ok := sysnum(r.name)
		if !ok || nr != d.nr {
			continue
		}
		if !r.holds(d) {
			return f.def
		}
		if r.errno != 0 {
			return unix.SECCOMP_RET_ERRNO | uint32(r.errno)
		}
		return unix.SECCOMP_RET_ALLOW
	}
	return f.def
}

func (r rule) holds(d data) bool {
	if len(r.sets) == 0 {
		return true
	}
	for _, s := range r.sets {
		all := true
		for _, c := range s {
			a := d.args[c.arg]
			switch c.op {
			case opEq:
				all = all && a == c.val
			case opBitsClear:
				all = all && a&c.val == 0
			case opBitsAny:
				all = all && a&c.val != 0
			default:
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}
