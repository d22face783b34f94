package source

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// readLikeCopy reads r as the copy engine does: workers taking 4 MiB
// chunks in order (workers 1: one reader moving forward in 64 KiB
// pieces, as grains are read).
func readLikeCopy(t *testing.T, r io.ReaderAt, size int64, workers int) []byte {
	t.Helper()
	out := make([]byte, size)
	if workers == 1 {
		for off := int64(0); off < size; off += 64 << 10 {
			if _, err := r.ReadAt(out[off:min(off+64<<10, size)], off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
		return out
	}
	chunks := make(chan int64)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for off := range chunks {
				if _, err := r.ReadAt(out[off:min(off+4<<20, size)], off); err != nil && err != io.EOF {
					t.Error(err)
				}
			}
		})
	}
	for off := int64(0); off < size; off += 4 << 20 {
		chunks <- off
	}
	close(chunks)
	wg.Wait()
	return out
}

// Against a host that throttles each connection, four connections read
// a file much faster than one, and never more than four are open.
func TestHTTPConnectionsParallel(t *testing.T) {
	const size = 24<<20 + 4096
	data := randomBytes(size, 4)
	for _, workers := range []int{2, 1} {
		took := map[int]time.Duration{}
		for _, conns := range []int{1, 4} {
			ds, ts, o := serveDatastore(t, map[string][]byte{"vm-flat.vmdk": data})
			ds.Throttle = 24 << 20
			o.Connections = conns
			fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, "vm-flat.vmdk"), o, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			f, err := fsys.Open("vm-flat.vmdk")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got := readLikeCopy(t, f.(io.ReaderAt), size, workers)
			took[conns] = time.Since(start)
			if !bytes.Equal(got, data) {
				t.Fatalf("%d connections, %d workers: the bytes differ", conns, workers)
			}
			if m := ds.MaxInFlight(); m > int64(conns) {
				t.Fatalf("%d requests in flight with --http-connections %d", m, conns)
			}
		}
		t.Logf("%d workers: 1 connection %v, 4 connections %v", workers, took[1], took[4])
		if took[1] < 2*took[4] {
			t.Errorf("%d workers: 4 connections took %v, not twice as fast as 1 (%v)", workers, took[4], took[1])
		}
	}
}

// Reading large files keeps a bounded number of blocks, whatever their
// size and however many files a chain has: the cache, the read-ahead and
// the connections are the FS's, shared by its files, and blocks dropped
// from the cache are not kept.
func TestHTTPReadAheadBounded(t *testing.T) {
	ds, ts, o := serveDatastore(t, nil)
	const size = 48 << 20
	names := []string{"vm-flat.vmdk", "vm-000001-delta.vmdk", "vm-000002-delta.vmdk"}
	for _, name := range names {
		f, err := os.Create(filepath.Join(ds.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil { // a sparse file: zeros, fast
			t.Fatal(err)
		}
		f.Close()
	}
	fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, names[0]), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	bound := cacheBlocks + 2*o.Connections
	var wg sync.WaitGroup
	for _, name := range names {
		hf, err := fsys.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r := hf.(*httpFile).r
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := r.ReadAt(buf, off); err != nil {
					t.Error(err)
					return
				}
				r.pool.mu.Lock()
				n := len(r.pool.blocks)
				r.pool.mu.Unlock()
				if n > bound {
					t.Errorf("%s at byte %d: %d blocks cached, more than %d", name, off, n, bound)
					return
				}
			}
		})
	}
	wg.Wait()
	if m := ds.MaxInFlight(); m > int64(o.Connections) {
		t.Fatalf("%d requests in flight for three files with %d connections", m, o.Connections)
	}
	// Every block was fetched about once: the read-ahead is used, not
	// dropped and fetched again (three readers share the cache, so a few
	// may be).
	if got, want := ds.Requests(), int64(len(names)*(size/httpBlockSize+1)); got > want+int64(bound) {
		t.Fatalf("%d requests for %d blocks", got, want-int64(len(names)))
	}
}
