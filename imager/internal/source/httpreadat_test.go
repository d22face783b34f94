package source

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/test/datastore"
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
func TestTimedHTTPConnections(t *testing.T) {
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
	bound := int64(cacheBlocks+2*o.Connections) * httpBlockSize
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
				var n int64
				for k := range r.pool.blocks {
					n += k.size
				}
				r.pool.mu.Unlock()
				if n > bound {
					t.Errorf("%s at byte %d: %d bytes of blocks cached, more than %d", name, off, n, bound)
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
	if got, want := ds.Requests(), int64(len(names)*(size/httpBlockSize+1)); got > want+bound/httpBlockSize+int64(len(names))*largeRead/smallBlockSize {
		t.Fatalf("%d requests for %d blocks", got, want-int64(len(names)))
	}
}

// served counts the bytes ds serves of each file (its replies'
// Content-Length).
type served struct {
	mu    sync.Mutex
	bytes map[string]int64
	reqs  map[string]int64
}

func countServed(ds *datastore.Server) *served {
	s := &served{bytes: map[string]int64{}, reqs: map[string]int64{}}
	ds.Rewrite = func(name string, h http.Header) {
		n, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.bytes[name] += n
		s.reqs[name]++
	}
	return s
}

func (s *served) of(name string) (bytes, requests int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes[name], s.reqs[name]
}

func openReader(t *testing.T, ds *datastore.Server, url, name string, o HTTPOptions) *httpReaderAt {
	t.Helper()
	fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(url, name), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	return f.(*httpFile).r
}

// Grains read at scattered offsets, as a delta a guest wrote at random is
// read, never trigger read-ahead, and cost about what they use, whatever
// the connections: a delta the cache holds is fetched in 64 KiB blocks
// (far fewer requests than grains, each byte about once); one much larger
// than the cache, read sparsely, fetches about the cache's size in small
// blocks, then the bytes read exactly.
func TestHTTPScatteredReads(t *testing.T) {
	const grain = 4096
	for _, c := range []struct {
		name      string
		size      int64
		every     int // one grain in every
		fewerReqs bool
	}{{"dense", 16 << 20, 2, true}, {"sparse", 256 << 20, 32, false}} {
		for _, conns := range []int{1, 4} {
			ds, ts, o := serveDatastore(t, nil)
			name := "vm-sesparse.vmdk"
			data := randomBytes(int(min(c.size, 16<<20)), 7)
			if err := os.WriteFile(filepath.Join(ds.Dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(ds.Dir, name), c.size); err != nil { // zeros past data: fast
				t.Fatal(err)
			}
			o.Connections = conns
			s := countServed(ds)
			r := openReader(t, ds, ts.URL, name, o)
			served0, opened := s.of(name)
			grains := int(c.size / grain)
			order := rand.New(rand.NewPCG(7, 7)).Perm(grains)[:grains/c.every]
			buf := make([]byte, grain)
			for _, g := range order {
				off := int64(g) * grain
				if _, err := r.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
				want := make([]byte, grain)
				if off < int64(len(data)) {
					want = data[off : off+grain]
				}
				if !bytes.Equal(buf, want) {
					t.Fatalf("%s, %d connections: grain %d differs", c.name, conns, g)
				}
			}
			r.pool.mu.Lock()
			for k := range r.pool.blocks {
				if k.size == httpBlockSize {
					t.Errorf("%s, %d connections: a 1 MiB block at %d was fetched for reads of single grains", c.name, conns, k.at)
				}
			}
			r.pool.mu.Unlock()
			got, reqs := s.of(name)
			got, reqs = got-served0, reqs-opened
			asked := int64(len(order)) * grain
			t.Logf("%s, %d connections: %d grains read (%d KiB): %d KiB served in %d requests", c.name, conns, len(order), asked>>10, got>>10, reqs)
			if got > min(c.size, max(2*asked, r.pool.keep))+randomSlack+smallBlockSize+asked || got > 2*c.size || reqs > int64(len(order)) {
				t.Errorf("%s, %d connections: %d bytes read: %d bytes served in %d requests", c.name, conns, asked, got, reqs)
			}
			if c.fewerReqs && reqs > int64(len(order))/2 {
				t.Errorf("%s, %d connections: %d requests for %d grains: small blocks unused", c.name, conns, reqs, len(order))
			}
		}
	}
}

// Two workers taking turns, each reading on from where its last read
// ended (the copy engine's workers on a flat extent), are each seen as
// sequential: 1 MiB blocks fetched ahead, about once each, not a request
// per read.
func TestHTTPInterleavedSequential(t *testing.T) {
	const size, piece = 16 << 20, 64 << 10
	data := randomBytes(size, 8)
	ds, ts, o := serveDatastore(t, map[string][]byte{"vm-flat.vmdk": data})
	s := countServed(ds)
	r := openReader(t, ds, ts.URL, "vm-flat.vmdk", o)
	_, opened := s.of("vm-flat.vmdk")
	got := make([]byte, size)
	ahead := false
	for off := int64(0); off < size/2; off += piece {
		for _, at := range []int64{off, size/2 + off} { // worker A, then worker B
			if _, err := r.ReadAt(got[at:at+piece], at); err != nil {
				t.Fatal(err)
			}
			r.pool.mu.Lock()
			_, ok := r.pool.blocks[r.big(at/httpBlockSize+2)]
			r.pool.mu.Unlock()
			ahead = ahead || ok && (at+2*httpBlockSize)/(size/2) == at/(size/2) // not the other worker's
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes differ")
	}
	n, reqs := s.of("vm-flat.vmdk")
	reqs -= opened
	t.Logf("%d reads of %d KiB: %d requests, %d bytes", 2*size/2/piece, piece>>10, reqs, n)
	if !ahead || reqs > size/httpBlockSize+4 || n > size+2*httpBlockSize {
		t.Fatalf("read ahead %v, %d requests (%d bytes) for %d blocks", ahead, reqs, n, size/httpBlockSize)
	}
}

// A read-ahead block nobody asked for while the cache turned over is
// dropped before a block a reader is reading: read-ahead that went unused
// cannot fill the cache.
func TestHTTPStaleReadAheadDroppedFirst(t *testing.T) {
	p := newBlockPool(4)
	r := &httpReaderAt{pool: p}
	add := func(idx int64, wanted bool) {
		p.made += httpBlockSize
		p.blocks[r.big(idx)] = &httpBlock{wanted: wanted, born: p.made}
		p.order = append(p.order, r.big(idx))
		p.cached += httpBlockSize
	}
	add(0, false) // read ahead, never asked for
	n := int(p.keep / httpBlockSize)
	for idx := int64(1); idx < int64(n); idx++ {
		add(idx, true)
	}
	p.made += p.keep // the cache turned over since block 0
	p.evict()
	if _, ok := p.blocks[r.big(0)]; ok || len(p.blocks) != n-1 || p.cached != int64(n-1)*httpBlockSize {
		t.Fatalf("evict kept the stale read-ahead block 0 (%d blocks left)", len(p.blocks))
	}
	// A recent read-ahead block is kept over one already read.
	add(100, false)
	p.evict()
	if _, ok := p.blocks[r.big(100)]; !ok {
		t.Fatal("evict dropped a fresh read-ahead block before the blocks read")
	}
	// A block a sequential reader read past goes before an older one a
	// random read may read again.
	p.blocks[r.big(int64(n-1))].done = true
	p.evict()
	if _, ok := p.blocks[r.big(int64(n-1))]; ok {
		t.Fatal("evict kept a block a sequential reader is done with over older blocks in use")
	}
}

// A parent read around its child's grains (reads with small gaps between
// them, where the child holds the data) is still a sequential reader.
func TestHTTPSequentialAroundGrains(t *testing.T) {
	const size = 8 << 20
	data := randomBytes(size, 9)
	ds, ts, o := serveDatastore(t, map[string][]byte{"vm-flat.vmdk": data})
	s := countServed(ds)
	r := openReader(t, ds, ts.URL, "vm-flat.vmdk", o)
	_, opened := s.of("vm-flat.vmdk")
	reads := 0
	for off := int64(0); off < size; off += 16 << 10 { // 12 KiB read, a 4 KiB grain skipped
		buf := make([]byte, 12<<10)
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[off:off+12<<10]) {
			t.Fatalf("bytes at %d differ", off)
		}
		reads++
	}
	if _, reqs := s.of("vm-flat.vmdk"); reqs-opened > size/httpBlockSize+8 {
		t.Fatalf("%d reads with gaps: %d requests for %d blocks", reads, reqs-opened, size/httpBlockSize)
	}
}
