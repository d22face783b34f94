package vmdk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// source is one file an extent reads from: a host file, or any io.ReaderAt
// for images opened with OpenReaderAt.
type source struct {
	name string
	r    io.ReaderAt
	size int64    // at open; metadata is checked against it
	f    hostFile // nil unless backed by a real file
	// closer closes the file (f, or an OpenFS fs.File); nil for the
	// caller's io.ReaderAt (OpenReaderAt).
	closer io.Closer
	// grown is the size after writes appended grains (0 if none).
	grown atomic.Int64
}

// end is the file's current size, including appended grains.
func (s *source) end() int64 { return max(s.size, s.grown.Load()) }

// readFull reads exactly len(p) bytes at off, turning a short file into
// ErrCorrupt that names what was being read.
func (s *source) readFull(p []byte, off int64, what string) error {
	if size := s.end(); off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("%s: %w: %s at byte %d (+%d) is past the end of the file (%d bytes)", s.name, ErrCorrupt, what, off, len(p), size)
	}
	n, err := s.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: read %s at byte %d: %w", s.name, what, off, err)
}

// runKind says where a range of an extent's content comes from.
type runKind uint8

const (
	runUnallocated runKind = iota // not in this image: the parent's content, or zeros
	runData                       // stored uncompressed at host
	runCompressed                 // stored in compressed grains
	runZero                       // reads as zeros (zeroed grain, ZERO extent)
	runNoAccess                   // a NOACCESS extent: reading is an error
)

// run is the status of a prefix of a requested range within one extent.
type run struct {
	kind runKind
	n    int64 // bytes
	host int64 // byte offset in the extent file for runData
	// hole: runData of a flat extent over a hole of its file, which reads
	// as zeros without being read.
	hole bool
}

// extent is the content of one descriptor extent line. Offsets are bytes
// relative to the extent's first byte. Implementations are safe for
// concurrent use.
type extent interface {
	// lookup returns the status of the longest prefix of [off, off+n) that
	// has one kind (and, for data, contiguous host offsets).
	lookup(off, n int64) (run, error)
	// read fills p (len(p) == r.n) with the content of run r at off.
	read(p []byte, off int64, r run) error
	// file is the extent file, or nil for ZERO/NOACCESS.
	file() *source
}

// flatExtent is a FLAT (or VMFS, raw device) extent: content stored as is.
type flatExtent struct {
	src  *source
	base int64 // byte offset of the extent's content in src
}

// lookup splits a flat extent at the holes of its file (where the
// filesystem tells them), so an extent of terabytes over a sparse file
// costs what is written in it; bytes past the file's end stay data, for
// the read to report.
func (e *flatExtent) lookup(off, n int64) (run, error) {
	r := run{kind: runData, n: n, host: e.base + off}
	f, ok := e.src.f.(*os.File)
	if end := e.src.end(); !ok || r.host >= end {
		return r, nil
	} else if d, ok := NextData(f, r.host); ok && d > r.host {
		r.hole, r.n = true, min(n, d-r.host, end-r.host)
	} else if h, ok := NextHole(f, r.host); ok && h > r.host {
		r.n = min(n, h-r.host)
	}
	return r, nil
}

func (e *flatExtent) read(p []byte, off int64, r run) error {
	if r.hole {
		clear(p)
		return nil
	}
	return e.src.readFull(p, r.host, "flat extent data")
}

func (e *flatExtent) file() *source { return e.src }

// zeroExtent is a ZERO extent line: no file, reads zeros.
type zeroExtent struct{}

func (zeroExtent) lookup(off, n int64) (run, error)      { return run{kind: runZero, n: n}, nil }
func (zeroExtent) read(p []byte, off int64, r run) error { clear(p); return nil }
func (zeroExtent) file() *source                         { return nil }

// noAccessExtent is a NOACCESS extent line: it holds the disk's place but
// reading it is an error (QEMU drops the line and misplaces what follows).
type noAccessExtent struct{}

func (noAccessExtent) lookup(off, n int64) (run, error) { return run{kind: runNoAccess, n: n}, nil }
func (noAccessExtent) read(p []byte, off int64, r run) error {
	return ErrNoAccess
}
func (noAccessExtent) file() *source { return nil }

// fitSparseLine is the one rule reconciling a sparse extent's line in the
// descriptor with the extent's own header; Open, OpenReaderAt,
// StreamReader and Check all apply it. VMware's spec gives each its role:
// the line's size is what places the extent in the disk (every line counts
// toward the disk's size, in order), the header's capacity is how much the
// extent itself holds. So:
//
//   - a line larger than the capacity promises content the extent cannot
//     hold: the image is corrupt (reading zeros past the capacity would
//     invent them). QEMU ignores the line and uses the capacity, which
//     silently shrinks the disk and moves every later extent.
//   - a line smaller than the capacity is read as the line says: the rest
//     of the extent is not part of the disk. hidden is its size in bytes,
//     which Check reports, since grains may be allocated there.
func fitSparseLine(name string, lineBytes, capacity int64) (hidden int64, err error) {
	if lineBytes > capacity {
		return 0, fmt.Errorf("%s: %w: the extent line places %d sectors but the sparse header's capacity is %d", name, ErrCorrupt, lineBytes/SectorSize, capacity/SectorSize)
	}
	return capacity - lineBytes, nil
}
