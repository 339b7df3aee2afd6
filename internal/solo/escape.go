package solo

import "io"

// escapeReader passes terminal input to the guest and quits on Ctrl-A x;
// Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A and any other byte sends both.
// A Ctrl-A at the end of one read waits for the next byte; bytes that do
// not fit the caller's buffer wait for the next Read.
type escapeReader struct {
	r       io.Reader
	quit    func()
	pending bool
	buf     []byte
	carry   []byte
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(e.carry) > 0 {
		n := copy(p, e.carry)
		e.carry = e.carry[n:]
		return n, nil
	}
	if cap(e.buf) < len(p) {
		e.buf = make([]byte, len(p))
	}
	in := e.buf[:len(p)]
	n, err := e.r.Read(in)
	// One input byte becomes at most two output bytes (a held Ctrl-A and
	// the byte after it).
	out := make([]byte, 0, n+1)
	for _, b := range in[:n] {
		if e.pending {
			e.pending = false
			switch b {
			case 'x', 'X':
				e.quit()
				k := copy(p, out)
				e.carry = append(e.carry[:0], out[k:]...)
				return k, io.EOF
			case 0x01:
				out = append(out, 0x01)
			default:
				out = append(out, 0x01, b)
			}
			continue
		}
		if b == 0x01 {
			e.pending = true
			continue
		}
		out = append(out, b)
	}
	k := copy(p, out)
	e.carry = append(e.carry[:0], out[k:]...)
	return k, err
}
