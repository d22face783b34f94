package source

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// reuseFiles is three files of distinct random bytes (a buffer reused
// too early shows up as another block's bytes), 24 MiB each and one not a
// multiple of a block.
func reuseFiles() map[string][]byte {
	files := map[string][]byte{}
	for i, name := range []string{"vm-flat.vmdk", "vm-000001-delta.vmdk", "vm-000002-delta.vmdk"} {
		b := make([]byte, 24<<20-int64(i)*333)
		rng := rand.New(rand.NewPCG(uint64(i), 16))
		for j := 0; j+8 <= len(b); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		files[name] = b
	}
	return files
}

// Block buffers are reused once out of the cache, so the pool's bytes
// must stay each block's own: readers of three files at once, sequential
// runs (read ahead, 1 MiB blocks) and scattered grains (64 KiB blocks and
// exact reads), every byte compared, while blocks are evicted under them.
func TestHTTPBlockReuseBytes(t *testing.T) {
	files := reuseFiles()
	ds, ts, o := serveDatastore(t, files)
	fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, "vm-flat.vmdk"), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for name, want := range files {
		f, err := fsys.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r := f.(*httpFile).r
		size := int64(len(want))
		check := func(buf []byte, off int64) bool {
			n, err := r.ReadAt(buf, off)
			if err != nil && err != io.EOF || string(buf[:n]) != string(want[off:off+int64(n)]) {
				t.Errorf("%s: %d bytes at %d: %d read (%v), not the file's bytes", name, len(buf), off, n, err)
				return false
			}
			return true
		}
		for w := range 2 { // two sequential readers taking turns, as the copy workers
			wg.Go(func() {
				buf := make([]byte, 192<<10)
				for off := int64(w) * int64(len(buf)); off < size; off += 2 * int64(len(buf)) {
					if !check(buf[:min(int64(len(buf)), size-off)], off) {
						return
					}
				}
			})
		}
		wg.Go(func() { // a guest's scattered grains
			rng := rand.New(rand.NewPCG(uint64(size), 1))
			buf := make([]byte, 4096)
			for range 1500 {
				if !check(buf, rng.Int64N(size/4096)*4096) {
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	p := fsys.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ahead < 0 || p.ahead > p.readAhead {
		t.Fatalf("%d blocks counted as read ahead, bound %d", p.ahead, p.readAhead)
	}
}

// A sequential read of a file many times the cache allocates about the
// cache's blocks, not the file's: dropped blocks' buffers are fetched
// into again (without, the heap grows to twice the cache before the
// collector runs).
func TestWithinMeasuresHTTPBlockReuse(t *testing.T) {
	const size = 128 << 20
	ds, ts, o := serveDatastore(t, nil)
	name := "vm-flat.vmdk"
	if err := truncateFile(ds.Dir, name, size); err != nil {
		t.Fatal(err)
	}
	fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, name), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	r := f.(*httpFile).r
	var wg sync.WaitGroup
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for w := range 2 {
		wg.Go(func() {
			buf := make([]byte, 4<<20)
			for off := int64(w) * int64(len(buf)); off < size; off += 2 * int64(len(buf)) {
				if _, err := r.ReadAt(buf, off); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	// The cache, the blocks in flight and the 8 the two readers' reads
	// want at once; the readers' own 8 MiB; and 16 MiB for net/http and
	// the server, which run in this process. Without reuse, it is the
	// file's size and more.
	bound := uint64(fsys.pool.keep) + uint64(o.Connections+8)*httpBlockSize + 8<<20 + 16<<20
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB read, %d MiB allocated (bound %d MiB)", size>>20, got>>20, bound>>20)
	if got > bound {
		t.Fatalf("reading %d MiB allocated %d bytes, more than %d: block buffers are not reused", size>>20, got, bound)
	}
}

func truncateFile(dir, name string, size int64) error {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate %s: %w", name, err)
	}
	return nil
}
