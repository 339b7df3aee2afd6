package privdrop

// With cgo (a plain 'go test' here, net bringing runtime/cgo), Setresuid
// and friends go through glibc's setxid broadcast; without (bin/colibri is
// built with CGO_ENABLED=0), through Go's AllThreadsSyscall. 'make unit'
// runs these tests both ways.
import _ "net"
