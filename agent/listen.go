package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = "/run/colibri/agent.sock"

// Listener is the agent's Unix socket, with the lock that makes it its
// own. Close removes the socket.
type Listener struct {
	net.Listener
	path string
	lock *os.File
	// Stale is true when a socket left by a dead agent was replaced.
	Stale bool
}

// Listen prepares the agent's socket at path: its directory is created,
// an agent already serving there is refused, a socket left by a dead one
// is replaced, and the new socket is made accessible to its owner only
// (mode 0600). A lock file beside it (path + ".lock") keeps two agents
// starting at once from both taking the path.
func Listen(path string) (*Listener, error) {
	if path == "" {
		return nil, errors.New("agent socket: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent socket: lock file: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("agent socket %s: another colibri agent is running there (it holds %s.lock)", path, path)
		}
		return nil, fmt.Errorf("agent socket: lock %s.lock: %w", path, err)
	}
	l := &Listener{path: path, lock: lock}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			lock.Close()
			return nil, fmt.Errorf("agent socket %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			lock.Close()
			return nil, fmt.Errorf("agent socket %s: an agent is already serving it", path)
		}
		if err := os.Remove(path); err != nil {
			lock.Close()
			return nil, fmt.Errorf("agent socket %s: removing the stale socket: %w", path, err)
		}
		l.Stale = true
	}
	// The socket is born 0600: no window in which others may connect.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		lock.Close()
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("agent socket %s: its filesystem cannot hold Unix sockets (9p? NFS?): put it on a local one, such as /run: %w", path, err)
		}
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		lock.Close()
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	l.Listener = ln
	return l, nil
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket and its lock file.
func (l *Listener) Close() error {
	err := l.Listener.Close() // a Unix listener removes its socket
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	os.Remove(l.path + ".lock")
	l.lock.Close()
	return err
}
