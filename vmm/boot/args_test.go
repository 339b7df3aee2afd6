package boot

import (
	"strings"
	"testing"
)

func TestDefaultArgs(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "pci=noearly"},
		{"console=ttyS0 quiet", "console=ttyS0 quiet pci=noearly"},
		{"console=ttyS0 quiet  ", "console=ttyS0 quiet pci=noearly"},
		// The user's own setting wins, and another pci= option list
		// still gets the default option.
		{"console=ttyS0 pci=noearly", "console=ttyS0 pci=noearly"},
		{"pci=nomsi,noearly quiet", "pci=nomsi,noearly quiet"},
		{`pci="noearly"`, `pci="noearly"`},
		{"pci=nomsi", "pci=nomsi pci=noearly"},
		// Arguments after -- are init's: defaults go before them.
		{"console=ttyS0 -- pci=noearly", "console=ttyS0 pci=noearly -- pci=noearly"},
		{"quiet --", "quiet pci=noearly --"},
		// Quoted values are one parameter, and "--" inside one is no
		// separator.
		{`colibri.run="echo -- pci=noearly" quiet`, `colibri.run="echo -- pci=noearly" quiet pci=noearly`},
		{"x--y pci_x=1", "x--y pci_x=1 pci=noearly"},
	}
	for _, c := range cases {
		if got := DefaultArgs(c.in); got != c.want {
			t.Errorf("DefaultArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCmdlineWords(t *testing.T) {
	got := cmdlineWords(` a  b="c d" e` + "\t" + `f="" `)
	want := []string{"a", `b="c d"`, "e", `f=""`}
	if len(got) != len(want) {
		t.Fatalf("%q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%q, want %q", got, want)
		}
	}
}

func FuzzDefaultArgs(f *testing.F) {
	f.Add("console=ttyS0 quiet")
	f.Add(`a="b -- c" -- d`)
	f.Add("pci=nomsi,noearly")
	f.Fuzz(func(t *testing.T, s string) {
		out := DefaultArgs(s)
		// Idempotent, and never drops what the user wrote.
		if again := DefaultArgs(out); again != out {
			t.Fatalf("DefaultArgs(%q) = %q, then %q", s, out, again)
		}
		k, rest := splitInitArgs(s)
		ok, orest := splitInitArgs(out)
		if orest != rest {
			t.Fatalf("init arguments %q became %q", rest, orest)
		}
		if !strings.HasPrefix(ok, trimRight(k)) {
			t.Fatalf("kernel part %q shrank to %q", k, ok)
		}
	})
}

func trimRight(s string) string {
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
