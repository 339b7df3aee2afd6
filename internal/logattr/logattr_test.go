package logattr_test

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/colibrivm/colibri/internal/logattr"
)

func TestErr(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log.Info("a", logattr.Err(errors.New("open x: no such file")))
	log.Info("b", logattr.Err(nil), slog.Int("n", 1))
	want := "level=INFO msg=a error=\"open x: no such file\"\nlevel=INFO msg=b n=1\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
