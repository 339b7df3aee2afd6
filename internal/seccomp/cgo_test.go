package seccomp

// With cgo (a plain 'go test' here, net bringing runtime/cgo), the test
// binary's threads come from pthread_create (clone3 first, then clone) and
// leave through glibc's thread exit. bin/colibri is built without cgo
// (Go's own threads): 'make unit' runs these tests both ways.
import _ "net"
