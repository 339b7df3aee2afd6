package newc

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHeader: one file's entry, byte for byte (newc: "070701", 13 fields
// of 8 hex digits, the name with its NUL padded to 4, the data padded to
// 4), then the trailer.
func TestHeader(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	if err := w.File("ab", 0o755, []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000081ed" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000003" + "00000000" + "00000000" + "00000000" + "00000000" + "00000003" + "00000000" +
		"ab\x00" + "\x00\x00\x00" + // 110 + 3 = 113: padded to 116
		"xyz\x00" +
		"070701" + "00000000" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000b" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00" // 110 + 11 = 121: padded to 124
	if got := b.String(); got != want {
		t.Errorf("archive:\n%q\nwant\n%q", got, want)
	}
}

func TestBadNames(t *testing.T) {
	for _, name := range []string{"", "/", "a//b", "../x", "a/./b", "TRAILER!!!", "a\x00b"} {
		w := NewWriter(io.Discard)
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

// TestAppendExtracts: Append's output is the initrd unchanged, then a
// gzip member holding an archive that GNU cpio extracts with the same
// files, modes and contents.
func TestAppendExtracts(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio(1) is not installed ('make deps' installs it): cannot check the archive with an independent reader")
	}
	var base bytes.Buffer
	zw := gzip.NewWriter(&base)
	zw.Write([]byte("the stock initrd"))
	zw.Close()
	prog := bytes.Repeat([]byte{0x7f, 'E', 'L', 'F', 1, 2, 3}, 1000)
	entries := []Entry{
		{Name: "opt", Mode: fs.ModeDir | 0o755},
		{Name: "opt/prog", Mode: 0o755, Data: prog},
		{Name: "/odd", Mode: 0o600, Data: []byte("x")},
		{Name: "empty", Mode: 0o644},
	}
	var out bytes.Buffer
	if err := Append(&out, base.Bytes(), entries); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out.Bytes(), base.Bytes()) {
		t.Fatal("the initrd is not left unchanged at the start")
	}
	// The appended member, alone, is a gzip'd archive.
	rest := out.Bytes()[len(base.Bytes()):]
	for len(rest) > 0 && rest[0] == 0 {
		rest = rest[1:]
	}
	zr, err := gzip.NewReader(bytes.NewReader(rest))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "-d", "--no-absolute-filenames", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(archive)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, b)
	}
	for _, e := range entries[1:] {
		p := filepath.Join(dir, strings.TrimPrefix(e.Name, "/"))
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s not extracted: %v", e.Name, err)
			continue
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, e.Data) || st.Mode().Perm() != e.Mode.Perm() {
			t.Errorf("%s: %d bytes, mode %v; want %d bytes, mode %v", e.Name, len(got), st.Mode().Perm(), len(e.Data), e.Mode.Perm())
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "opt")); err != nil || !st.IsDir() {
		t.Errorf("opt is not a directory: %v", err)
	}
}

// TestAppendAligns: after an uncompressed initrd of odd length the next
// archive starts 4-byte aligned.
func TestAppendAligns(t *testing.T) {
	var out bytes.Buffer
	if err := Append(&out, []byte("12345"), nil); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	if !bytes.Equal(b[:8], []byte("12345\x00\x00\x00")) || b[8] != 0x1f || b[9] != 0x8b {
		t.Errorf("start of the output %q, want the initrd, zeros to offset 8, then gzip's magic", b[:10])
	}
	if err := Append(io.Discard, nil, nil); err == nil {
		t.Error("an empty initrd was accepted")
	}
}
