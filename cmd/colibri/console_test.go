package main

import (
	"bytes"
	"testing"
)

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	shared := &lockedWriter{w: &out}
	a, b := newPrefixWriter(shared, "a| "), newPrefixWriter(shared, "b| ")
	a.Write([]byte("hel"))
	b.Write([]byte("one\r\ntw"))
	a.Write([]byte("lo\r\nworld\n"))
	b.Write([]byte("o"))
	b.Flush()
	a.Flush()
	want := "b| one\na| hello\na| world\nb| two\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
