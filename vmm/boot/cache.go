package boot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cacheEntries is how many decompressed kernels a cache directory keeps
// (each is the size of a vmlinux, 30–120 MiB); the least recently used
// go first.
const cacheEntries = 8

const cacheSuffix = ".vmlinux"

// DefaultCacheDir returns where colibri keeps decompressed kernels:
// $XDG_CACHE_HOME/colibri/kernels, or ~/.cache/colibri/kernels.
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for decompressed kernels: %w", err)
	}
	return filepath.Join(dir, "colibri", "kernels"), nil
}

// cache is the entry of one bzImage in a directory of decompressed
// kernels, each in a file named by the SHA-256 of its bzImage. Writers
// write a temporary file and rename it into place, so concurrent boots of
// one bzImage never see a partial entry (both write the same bytes; the
// last rename wins).
type cache struct {
	dir, path string
}

func newCache(dir string, img []byte) *cache {
	sum := sha256.Sum256(img)
	return &cache{dir: dir, path: filepath.Join(dir, hex.EncodeToString(sum[:])+cacheSuffix)}
}

// get returns the cached kernel, mapped, if it is there and of the size
// its bzImage records (size, which the caller has bounded). Entries are
// replaced by rename and removed by unlink, never truncated in place, so
// the mapping stays whole (and Guard catches it if someone else does).
func (c *cache) get(size uint64) (*File, error) {
	p := c.path
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 || uint64(fi.Size()) != size {
		return nil, fmt.Errorf("cache entry %s is not a kernel of the %d bytes its bzImage records", p, size)
	}
	f, err := OpenFile(p)
	if err != nil {
		return nil, err
	}
	if uint64(len(f.Bytes())) != size {
		f.Close()
		return nil, fmt.Errorf("cache entry %s changed while being opened", p)
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // recently used: kept longer
	return f, nil
}

// put stores vmlinux as the kernel and trims the cache to cacheEntries.
func (c *cache) put(vmlinux []byte) error {
	return c.write(func(f *os.File) error {
		_, err := f.Write(vmlinux)
		return err
	})
}

// fill stores as the kernel the size bytes decode writes into a shared
// mapping of the new entry's file: the kernel goes to the page cache
// (which the kernel can write back and reclaim) rather than the heap. The
// file's blocks are allocated first, so that a full file system fails
// here and not as a fault while decode writes. A file system that cannot
// allocate ahead (or map) gets decode's output from the heap instead.
func (c *cache) fill(size uint64, decode func(out []byte) error) error {
	if size == 0 || size != uint64(int(size)) {
		return fmt.Errorf("a cache entry of %d bytes", size)
	}
	return c.write(func(f *os.File) error {
		fd := int(f.Fd())
		if err := unix.Fallocate(fd, 0, 0, int64(size)); err != nil {
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
				return fmt.Errorf("allocating %d bytes for the cache entry: %w", size, err)
			}
			return decodeToFile(f, size, decode)
		}
		out, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return decodeToFile(f, size, decode)
		}
		err = decode(out)
		if uerr := unix.Munmap(out); err == nil {
			err = uerr
		}
		return err
	})
}

// decodeToFile is fill's fallback: decode into the heap, then write.
func decodeToFile(f *os.File, size uint64, decode func(out []byte) error) error {
	out := make([]byte, size)
	if err := decode(out); err != nil {
		return err
	}
	_, err := f.WriteAt(out, 0)
	return err
}

// write makes a new entry from what fillFile writes into a temporary file
// and renames it into place, then trims the cache to cacheEntries.
func (c *cache) write(fillFile func(f *os.File) error) error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(c.dir, ".tmp-*"+cacheSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename: nothing to remove
	if err := fillFile(f); err != nil {
		f.Close()
		return err
	}
	// Durable before it becomes visible: a crash must not leave a
	// truncated kernel under the final name.
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return err
	}
	c.trim()
	return nil
}

// trim removes the least recently used entries beyond cacheEntries, and
// temporary files a crashed writer left more than an hour ago.
func (c *cache) trim() {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type entry struct {
		name string
		t    time.Time
	}
	var kept []entry
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, cacheSuffix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if strings.HasPrefix(name, ".tmp-") {
			if time.Since(fi.ModTime()) > time.Hour {
				os.Remove(filepath.Join(c.dir, name))
			}
			continue
		}
		kept = append(kept, entry{name, fi.ModTime()})
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].t.After(kept[j].t) })
	for _, e := range kept[min(len(kept), cacheEntries):] {
		os.Remove(filepath.Join(c.dir, e.name))
	}
}
