// Command imports is memstat's second baseline: a hello world that links
// every package cmd/colibri imports (and so runs their initialisation),
// and does nothing else. The list is cmd/colibri's imports on 2026-12-02
// (go list -f '{{join .Imports "\n"}}' ./cmd/colibri): keep it in step by
// hand.
package main

import (
	"fmt"

	_ "bytes"
	_ "context"
	_ "crypto/rand"
	_ "encoding/json"
	_ "errors"
	_ "github.com/colibrivm/colibri/agent"
	_ "github.com/colibrivm/colibri/agent/api"
	_ "github.com/colibrivm/colibri/agent/client"
	_ "github.com/colibrivm/colibri/exp"
	_ "github.com/colibrivm/colibri/host"
	_ "github.com/colibrivm/colibri/host/spec"
	_ "github.com/colibrivm/colibri/internal/clilog"
	_ "github.com/colibrivm/colibri/internal/logattr"
	_ "github.com/colibrivm/colibri/internal/privdrop"
	_ "github.com/colibrivm/colibri/internal/seccomp"
	_ "github.com/colibrivm/colibri/internal/solo"
	_ "github.com/colibrivm/colibri/kvm"
	_ "github.com/colibrivm/colibri/netstack"
	_ "github.com/colibrivm/colibri/sched"
	_ "github.com/colibrivm/colibri/sched/bench"
	_ "github.com/colibrivm/colibri/sched/observer"
	_ "github.com/colibrivm/colibri/sched/threadvcpu"
	_ "github.com/colibrivm/colibri/vmm"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/pflag"
	_ "golang.org/x/sys/unix"
	_ "io"
	_ "log/slog"
	_ "net"
	_ "net/http"
	_ "os"
	_ "os/signal"
	_ "path/filepath"
	_ "runtime/debug"
	_ "sort"
	_ "strconv"
	_ "strings"
	_ "sync"
	_ "sync/atomic"
	_ "syscall"
	_ "text/tabwriter"
	_ "time"
)

func main() { fmt.Println("hello") }
