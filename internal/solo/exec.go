package solo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// VMMProgram is the name of the binary that runs one VM alone: the
// process `colibri boot` becomes.
const VMMProgram = "colibri-vmm"

// SpecFDFlag is the flag colibri-vmm reads its Spec's file descriptor
// from.
const SpecFDFlag = "--spec-fd"

// maxSpec bounds the JSON a Spec is read from.
const maxSpec = 1 << 20

// FindVMM returns the colibri-vmm beside the running executable, or ""
// when there is none that can be executed.
func FindVMM() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	path := filepath.Join(filepath.Dir(exe), VMMProgram)
	if unix.Access(path, unix.X_OK) != nil {
		return ""
	}
	return path
}

// Exec replaces the calling process with the program at path running s:
// the same pid, terminal, standard streams and environment. s reaches it
// through an inherited memfd named by SpecFDFlag. Exec returns only on
// failure.
func Exec(path string, s Spec) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding the VM description: %w", err)
	}
	fd, err := unix.MemfdCreate("colibri-vm-spec", 0) // no MFD_CLOEXEC: the program inherits it
	if err != nil {
		return fmt.Errorf("memfd for the VM description: %w", err)
	}
	f := os.NewFile(uintptr(fd), "colibri-vm-spec")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing the VM description: %w", err)
	}
	argv := []string{path, SpecFDFlag, strconv.Itoa(fd)}
	err = syscall.Exec(path, argv, os.Environ())
	f.Close()
	return fmt.Errorf("exec %s: %w", path, err)
}

// ReadSpec reads the Spec Exec passed at file descriptor fd, closes fd
// and validates the Spec.
func ReadSpec(fd int) (Spec, error) {
	var s Spec
	if fd < 0 {
		return s, fmt.Errorf("VM description: file descriptor %d", fd)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "colibri-vm-spec")
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxSpec+1))
	if err != nil {
		return s, fmt.Errorf("reading the VM description from descriptor %d: %w", fd, err)
	}
	if len(data) > maxSpec {
		return s, fmt.Errorf("VM description at descriptor %d is over %d bytes", fd, maxSpec)
	}
	if len(data) == 0 {
		return s, errors.New("VM description is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("VM description: %w", err)
	}
	return s, s.Validate()
}
