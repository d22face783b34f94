package vmdk

import (
	"fmt"
	"runtime"
	"sync"
)

// Compressed (streamOptimized) grains: each GTE points at a grain marker
// {LBA, compressed size} followed by zlib (or raw deflate) data.

// maxWindow bounds the single read readCompressed makes for a request.
const maxWindow = 16 << 20

// maxCompressedGrain bounds the grain size of compressed images (real ones
// use 64 KiB): each grain is inflated whole, so this bounds that buffer.
const maxCompressedGrain = 16 << 20

// readCompressed fills p with the content of consecutive compressed grains
// starting at off. When the grains lie in ascending order in the file (as
// every writer lays them out) their compressed bytes are read with one read
// call; the grains are then inflated in parallel.
func (e *sparseExtent) readCompressed(p []byte, off int64) error {
	first, last := off/e.grainBytes, (off+int64(len(p))-1)/e.grainBytes
	if first == last {
		// One grain (a run between unallocated ones is often one): no
		// goroutines, nothing allocated.
		gte, err := e.gte(first)
		if err != nil {
			return err
		}
		return e.grainInto(p, off, first, gte, nil, 0)
	}
	gtes := make([]uint32, last-first+1)
	for i := range gtes {
		v, err := e.gte(first + int64(i))
		if err != nil {
			return err
		}
		gtes[i] = v
	}
	wp, windowOff, err := e.readWindow(gtes)
	if err != nil {
		return err
	}
	defer windows.put(wp)
	var window []byte
	if wp != nil {
		window = *wp
	}
	return parallel(len(gtes), func(i int) error {
		return e.grainInto(p, off, first+int64(i), gtes[i], window, windowOff)
	})
}

// grainInto fills the part of p (the extent's bytes from off) that grain
// g (at GTE gte) covers: a whole grain is inflated straight into p, a
// part of one through cachedGrain.
func (e *sparseExtent) grainInto(p []byte, off, g int64, gte uint32, window []byte, windowOff int64) error {
	start := g * e.grainBytes
	lo, hi := max(off, start), min(off+int64(len(p)), start+e.grainBytes)
	dst := p[lo-off : hi-off]
	if lo == start && hi-start == e.grainLen(g) {
		return e.inflateGrain(g, gte, dst, window, windowOff)
	}
	data, err := e.cachedGrain(g, gte)
	if err != nil {
		return err
	}
	copy(dst, data[lo-start:hi-start])
	return nil
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines, the caller's
// among them, and returns the first error. A panic in fn becomes an error
// rather than killing the process from a goroutine no caller can recover.
// It runs once per read request (or run of grains); the caller working
// too, a request on two cores starts one goroutine, not two.
func parallel(n int, f func(int) error) error {
	j := &parallelJob{f: f, n: n}
	workers := min(runtime.GOMAXPROCS(0), n)
	j.wg.Add(workers - 1)
	for range workers - 1 {
		go j.work(true)
	}
	j.work(false)
	j.wg.Wait()
	return j.err
}

type parallelJob struct {
	f    func(int) error
	n    int
	wg   sync.WaitGroup
	mu   sync.Mutex
	next int
	err  error // the first error
}

// work runs items until none is left or one failed.
func (j *parallelJob) work(spawned bool) {
	if spawned {
		defer j.wg.Done()
	}
	for {
		j.mu.Lock()
		i := j.next
		j.next++
		stop := j.err != nil
		j.mu.Unlock()
		if i >= j.n || stop {
			return
		}
		if err := j.one(i); err != nil {
			j.mu.Lock()
			if j.err == nil {
				j.err = err
			}
			j.mu.Unlock()
			return
		}
	}
}

func (j *parallelJob) one(i int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("vmdk: internal error: %v", r)
		}
	}()
	return j.f(i)
}

// bufPool keeps buffers for reads of compressed bytes: the windows of
// requests (several MiB) and single grains' bytes (a grain's worth) in
// pools of their own, so neither takes the other's and reallocates.
type bufPool struct {
	pool sync.Pool // of *[]byte: a pointer, so Put allocates nothing
	unit int       // capacities are rounded up to a multiple of it
}

var (
	windows   = &bufPool{unit: 1 << 20}
	grainBufs = &bufPool{unit: 128 << 10}
)

// get returns a buffer of n bytes; put it back with put.
func (bp *bufPool) get(n int) *[]byte {
	p, _ := bp.pool.Get().(*[]byte)
	if p == nil {
		p = new([]byte)
	}
	if cap(*p) < n {
		*p = make([]byte, n, (n+bp.unit-1)/bp.unit*bp.unit)
	}
	*p = (*p)[:n]
	return p
}

func (bp *bufPool) put(p *[]byte) {
	if p != nil {
		bp.pool.Put(p)
	}
}

// readWindow reads the file range holding all of gtes' compressed grains
// when they ascend and the range is small; otherwise it returns nil and
// grains are read one by one.
func (e *sparseExtent) readWindow(gtes []uint32) (*[]byte, int64, error) {
	if len(gtes) < 2 {
		return nil, 0, nil
	}
	for i := 1; i < len(gtes); i++ {
		if gtes[i] <= gtes[i-1] {
			return nil, 0, nil
		}
	}
	lo := int64(gtes[0]) * SectorSize
	hi := min(int64(gtes[len(gtes)-1])*SectorSize+grainMarkerSize+maxCompressedSize(e.grainBytes), e.src.size)
	if lo >= hi || hi-lo > maxWindow {
		return nil, 0, nil
	}
	p := windows.get(int(hi - lo))
	if err := e.src.readFull(*p, lo, "compressed grains"); err != nil {
		windows.put(p)
		return nil, 0, err
	}
	return p, lo, nil
}

// grainLen is the content length of grain g: a full grain, or less for the
// final grain of a capacity that is not a grain multiple.
func (e *sparseExtent) grainLen(g int64) int64 {
	return min(e.grainBytes, e.capacity-g*e.grainBytes)
}

// cachedGrain returns grain g's inflated content, keeping the last one so a
// run of small reads inflates each grain once.
func (e *sparseExtent) cachedGrain(g int64, gte uint32) ([]byte, error) {
	e.mu.Lock()
	if e.last.data != nil && e.last.index == g {
		d := e.last.data
		e.mu.Unlock()
		return d, nil
	}
	e.mu.Unlock()
	data := make([]byte, e.grainLen(g))
	if err := e.inflateGrain(g, gte, data, nil, 0); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.last.index, e.last.data = g, data
	e.mu.Unlock()
	return data, nil
}

// inflateGrain inflates compressed grain g (at GTE gte) into dst, which is
// exactly the grain's content length. The compressed bytes come from window
// (file bytes starting at windowOff) when it holds them, else from the
// file, into a pooled buffer: a grain between unallocated ones (a run of
// one grain) allocates nothing either.
func (e *sparseExtent) inflateGrain(g int64, gte uint32, dst, window []byte, windowOff int64) error {
	host := int64(gte) * SectorSize
	if host+grainMarkerSize > e.src.end() {
		return fmt.Errorf("%s: %w: compressed grain %d at sector %d lies past the end of the file", e.src.name, ErrCorrupt, g, gte)
	}
	maxCompressed := maxCompressedSize(e.grainBytes)
	in := func(off, n int64) bool {
		return window != nil && off >= windowOff && off+n <= windowOff+int64(len(window))
	}
	var data []byte
	if e.markers {
		if !in(host, grainMarkerSize) {
			bp := grainBufs.get(int(grainMarkerSize + maxCompressed))
			defer grainBufs.put(bp)
			buf := *bp
			if err := e.src.readFull(buf[:grainMarkerSize], host, "grain marker"); err != nil {
				return fmt.Errorf("grain %d: %w", g, err)
			}
			window, windowOff = buf[:grainMarkerSize], host
			if size := int64(parseMarker(window).size); size <= maxCompressed {
				window = buf[:grainMarkerSize+size]
				if err := e.src.readFull(window[grainMarkerSize:], host+grainMarkerSize, "compressed grain"); err != nil {
					return fmt.Errorf("grain %d: %w", g, err)
				}
			}
		}
		m := window[host-windowOff : host-windowOff+grainMarkerSize]
		gm := parseMarker(m)
		if want := uint64(g * e.grainBytes / SectorSize); gm.val != want {
			return fmt.Errorf("%s: %w: grain marker at sector %d says LBA %d, its grain table says %d", e.src.name, ErrCorrupt, gte, gm.val, want)
		}
		if err := gm.grainErr(e.grainBytes, e.capacity); err != nil {
			return fmt.Errorf("%s: %w: grain %d: %v", e.src.name, ErrCorrupt, g, err)
		}
		at, n := host+grainMarkerSize, int64(gm.size)
		if !in(at, n) {
			// In the window only in part: read it whole.
			bp := grainBufs.get(int(n))
			defer grainBufs.put(bp)
			buf := *bp
			if err := e.src.readFull(buf[:n], at, "compressed grain"); err != nil {
				return fmt.Errorf("grain %d: %w", g, err)
			}
			window, windowOff = buf[:n], at
		}
		data = window[at-windowOff : at-windowOff+n]
	} else {
		// No marker: the compressed stream starts at the GTE and ends itself.
		n := min(maxCompressed, e.src.size-host)
		if !in(host, n) {
			bp := grainBufs.get(int(n))
			defer grainBufs.put(bp)
			buf := *bp
			if err := e.src.readFull(buf[:n], host, "compressed grain"); err != nil {
				return fmt.Errorf("grain %d: %w", g, err)
			}
			window, windowOff = buf[:n], host
		}
		data = window[host-windowOff : host-windowOff+n]
	}
	if err := inflate(dst, data); err != nil {
		return fmt.Errorf("%s: %w: grain %d at sector %d: %v", e.src.name, ErrCorrupt, g, gte, err)
	}
	return nil
}

// isZlib reports whether b starts with an RFC 1950 header. Every real writer
// emits zlib although the spec says deflate, so both are accepted.
func isZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// inflate decompresses src into dst, which must receive exactly len(dst)
// bytes; a stream that inflates to more or fewer is an error.
func inflate(dst, src []byte) error {
	if isZlib(src) {
		return inflateZlib(dst, src)
	}
	_, err := inflateRaw(dst, src)
	return err
}
