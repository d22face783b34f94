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
	gtes := make([]uint32, last-first+1)
	for i := range gtes {
		v, err := e.gte(first + int64(i))
		if err != nil {
			return err
		}
		gtes[i] = v
	}
	window, windowOff, err := e.readWindow(gtes)
	if err != nil {
		return err
	}
	defer putWindow(window)
	one := func(i int) error {
		g := first + int64(i)
		start := g * e.grainBytes
		lo, hi := max(off, start), min(off+int64(len(p)), start+e.grainBytes)
		dst := p[lo-off : hi-off]
		if lo == start && hi-start == e.grainLen(g) {
			return e.inflateGrain(g, gtes[i], dst, window, windowOff) // whole grain: straight into p
		}
		data, err := e.cachedGrain(g, gtes[i])
		if err != nil {
			return err
		}
		copy(dst, data[lo-start:hi-start])
		return nil
	}
	return parallel(len(gtes), one)
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines and returns the
// first error. A panic in fn becomes an error rather than killing the
// process from a goroutine no caller can recover.
func parallel(n int, f func(int) error) error {
	fn := func(i int) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("vmdk: internal error: %v", r)
			}
		}()
		return f(i)
	}
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		next     int
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

var windows sync.Pool

func putWindow(b []byte) {
	if b != nil {
		b = b[:0]
		windows.Put(&b)
	}
}

// readWindow reads the file range holding all of gtes' compressed grains
// when they ascend and the range is small; otherwise it returns nil and
// grains are read one by one.
func (e *sparseExtent) readWindow(gtes []uint32) ([]byte, int64, error) {
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
	var buf []byte
	if p, ok := windows.Get().(*[]byte); ok {
		buf = *p
	}
	if cap(buf) < int(hi-lo) {
		buf = make([]byte, hi-lo, (hi-lo+1<<20-1)&^(1<<20-1))
	}
	buf = buf[:hi-lo]
	if err := e.src.readFull(buf, lo, "compressed grains"); err != nil {
		putWindow(buf)
		return nil, 0, err
	}
	return buf, lo, nil
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
// (file bytes starting at windowOff) when it holds them, else from the file.
func (e *sparseExtent) inflateGrain(g int64, gte uint32, dst, window []byte, windowOff int64) error {
	host := int64(gte) * SectorSize
	if host+grainMarkerSize > e.src.end() {
		return fmt.Errorf("%s: %w: compressed grain %d at sector %d lies past the end of the file", e.src.name, ErrCorrupt, g, gte)
	}
	maxCompressed := maxCompressedSize(e.grainBytes)
	// read returns n file bytes at off, from the window when it has them;
	// what names them for an error of a read from the file (made only
	// then: the window serves every grain of a sequential read).
	read := func(off, n int64, what func() string) ([]byte, error) {
		if window != nil && off >= windowOff && off+n <= windowOff+int64(len(window)) {
			return window[off-windowOff : off-windowOff+n], nil
		}
		b := make([]byte, n)
		return b, e.src.readFull(b, off, what())
	}
	var data []byte
	if e.markers {
		m, err := read(host, grainMarkerSize, func() string { return fmt.Sprintf("grain marker of grain %d", g) })
		if err != nil {
			return err
		}
		gm := parseMarker(m)
		if want := uint64(g * e.grainBytes / SectorSize); gm.val != want {
			return fmt.Errorf("%s: %w: grain marker at sector %d says LBA %d, its grain table says %d", e.src.name, ErrCorrupt, gte, gm.val, want)
		}
		if err := gm.grainErr(e.grainBytes, e.capacity); err != nil {
			return fmt.Errorf("%s: %w: grain %d: %v", e.src.name, ErrCorrupt, g, err)
		}
		if data, err = read(host+grainMarkerSize, int64(gm.size), func() string { return fmt.Sprintf("compressed grain %d", g) }); err != nil {
			return err
		}
	} else {
		// No marker: the compressed stream starts at the GTE and ends itself.
		var err error
		if data, err = read(host, min(maxCompressed, e.src.size-host), func() string { return fmt.Sprintf("compressed grain %d", g) }); err != nil {
			return err
		}
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
