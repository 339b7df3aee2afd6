package kvm

import "unsafe"

func hostAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
