package vmdk

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// StreamOptions configures a StreamWriter.
type StreamOptions struct {
	ImageOptions
	// Level is the zlib level, 1 (fastest) to 9 (smallest); 0 means 6.
	Level int
	// ExtentFileName is the name the embedded descriptor gives the image
	// file (default "disk.vmdk"); some readers insist it matches.
	ExtentFileName string
	// Workers compressing grains (default GOMAXPROCS).
	Workers int
}

// StreamWriter writes a streamOptimized image sequentially to any
// io.Writer (a file, a pipe, an HTTP upload) in VMware's canonical layout:
// a version-3 header with GD_AT_END, the descriptor, grain markers with zlib
// data, a GT marker and GT after each table's grains, then GD marker and GD,
// footer marker and footer, end-of-stream marker. All-zero grains are
// skipped. Grains are compressed on all cores; the output does not depend
// on scheduling.
type StreamWriter struct {
	out        *bufio.Writer
	pos        int64 // bytes written to out
	header     SparseHeader
	grainBytes int64
	size       int64
	level      int
	desc       *Descriptor

	cur     []byte // the grain being filled
	curOff  int64  // content offset of cur
	written int64  // content bytes accepted so far

	gd      []uint32
	gt      []uint32 // current grain table
	gtIndex int64    // index of gt, -1 before the first grain

	jobs    chan chan compressedGrain // in grain order
	done    chan error                // the emitter's result, after jobs closes
	failed  chan struct{}             // closed by the emitter on its first error
	failErr error                     // that error, set before failed closes
	grains  sync.Pool                 // grain buffers
	workers chan struct{}             // bounds grains being compressed
	err     error
	closed  bool
}

type compressedGrain struct {
	lba  int64
	data []byte
	err  error
}

// NewStreamWriter writes the header and descriptor and returns a writer for
// the disk's content.
func NewStreamWriter(w io.Writer, opts StreamOptions) (*StreamWriter, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if opts.Level == 0 {
		opts.Level = 6
	}
	if opts.Level < 1 || opts.Level > 9 {
		return nil, fmt.Errorf("%w: compression level %d: want 1..9", ErrInvalidOptions, opts.Level)
	}
	if opts.ExtentFileName == "" {
		opts.ExtentFileName = "disk.vmdk"
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	sectors := opts.Size / SectorSize
	desc := newDescriptor(&opts.ImageOptions, StreamOptimized, []ExtentLine{
		{Access: AccessRW, Sectors: sectors, Type: ExtentSparse, File: opts.ExtentFileName},
	})
	text := desc.Format()
	descSectors := max(descriptorSectors, (int64(len(text))+SectorSize-1)/SectorSize)
	s := &StreamWriter{
		out:        bufio.NewWriterSize(w, 1<<20),
		grainBytes: opts.GrainSize,
		size:       opts.Size,
		level:      opts.Level,
		desc:       desc,
		gtIndex:    -1,
		header: SparseHeader{
			Version: 3, Flags: flagNewlineCheck | flagCompressed | flagMarkers,
			Capacity: uint64(sectors), GrainSize: uint64(opts.GrainSize / SectorSize),
			DescriptorOffset: 1, DescriptorSize: uint64(descSectors),
			NumGTEsPerGT: maxGTEsPerGT, GDOffset: gdAtEnd,
			OverHead: uint64(1 + descSectors), CompressAlgorithm: compressionDeflate,
		},
	}
	s.gd = make([]uint32, s.header.gdEntries())
	s.write(s.header.marshal())
	s.write(text)
	s.pad()
	s.write(make([]byte, int64(s.header.OverHead)*SectorSize-s.pos))
	if s.err != nil {
		return nil, s.err
	}
	s.jobs = make(chan chan compressedGrain, 2*opts.Workers)
	s.done = make(chan error, 1)
	s.failed = make(chan struct{})
	s.workers = make(chan struct{}, opts.Workers)
	go s.emit()
	return s, nil
}

// Descriptor is the embedded descriptor of the image being written.
func (s *StreamWriter) Descriptor() *Descriptor { return s.desc }

func (s *StreamWriter) write(p []byte) {
	if s.err != nil {
		return
	}
	n, err := s.out.Write(p)
	s.pos += int64(n)
	s.err = err
}

func (s *StreamWriter) pad() {
	if r := s.pos % SectorSize; r != 0 {
		s.write(make([]byte, SectorSize-r))
	}
}

// Write appends content. The total written may not exceed the disk size;
// what is not written by Close reads as zeros.
func (s *StreamWriter) Write(p []byte) (int, error) {
	if s.closed {
		return 0, fmt.Errorf("vmdk: write to a closed StreamWriter: %w", os.ErrClosed)
	}
	if int64(len(p)) > s.size-s.written {
		return 0, fmt.Errorf("%w: stream write of %d bytes at %d passes the disk size %d", ErrOutOfRange, len(p), s.written, s.size)
	}
	n := 0
	for n < len(p) {
		if s.cur == nil {
			if b, ok := s.grains.Get().(*[]byte); ok {
				s.cur = (*b)[:0]
			} else {
				s.cur = make([]byte, 0, s.grainBytes)
			}
			s.curOff = s.written
		}
		k := copy(s.cur[len(s.cur):cap(s.cur)], p[n:])
		s.cur = s.cur[:len(s.cur)+k]
		n += k
		s.written += int64(k)
		if int64(len(s.cur)) == s.grainBytes {
			if err := s.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// WriteAt writes content at off, which may not lie before what was already
// written: the gap reads as zeros. It lets copy loops that skip holes feed
// a stream in ascending order.
func (s *StreamWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := s.skipTo(off); err != nil {
		return 0, err
	}
	return s.Write(p)
}

// skipTo advances the content position to off, leaving zeros.
func (s *StreamWriter) skipTo(off int64) error {
	if off < s.written {
		return fmt.Errorf("%w: stream write at %d after %d: streams are written in order", ErrOutOfRange, off, s.written)
	}
	if off > s.size {
		return fmt.Errorf("%w: stream write at %d passes the disk size %d", ErrOutOfRange, off, s.size)
	}
	if s.cur != nil {
		// Fill the open grain up to off (or its end) with zeros.
		fill := min(off-s.written, s.grainBytes-int64(len(s.cur)))
		if _, err := s.Write(make([]byte, fill)); err != nil {
			return err
		}
	}
	if off > s.written {
		// Whole grains of zeros are absent from a stream; a partial one
		// starts the next grain.
		start := off / s.grainBytes * s.grainBytes
		s.written = start
		if start < off {
			if _, err := s.Write(make([]byte, off-start)); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit hands the filled grain to a compressor, keeping grain order.
func (s *StreamWriter) submit() error {
	select {
	case <-s.failed:
		return fmt.Errorf("vmdk: stream output failed: %w", s.failErr)
	default:
	}
	data := s.cur
	lba := s.curOff / SectorSize
	s.cur = nil
	if isZero(data) {
		s.grains.Put(&data)
		return nil
	}
	res := make(chan compressedGrain, 1)
	s.jobs <- res
	s.workers <- struct{}{}
	go func() {
		defer func() { <-s.workers }()
		res <- compressGrain(lba, data, s.level)
		s.grains.Put(&data)
	}()
	return nil
}

var zlibWriters [10]sync.Pool

func compressGrain(lba int64, data []byte, level int) compressedGrain {
	var buf bytes.Buffer
	buf.Grow(len(data)/2 + 64)
	zw, _ := zlibWriters[level].Get().(*zlib.Writer)
	if zw == nil {
		var err error
		if zw, err = zlib.NewWriterLevel(&buf, level); err != nil {
			return compressedGrain{err: err}
		}
	} else {
		zw.Reset(&buf)
	}
	defer zlibWriters[level].Put(zw)
	if _, err := zw.Write(data); err != nil {
		return compressedGrain{err: err}
	}
	if err := zw.Close(); err != nil {
		return compressedGrain{err: err}
	}
	return compressedGrain{lba: lba, data: buf.Bytes()}
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeroBlock = make([]byte, 64<<10)

// emit writes compressed grains in order, with a grain table after each
// table's grains.
func (s *StreamWriter) emit() {
	var err error
	for res := range s.jobs {
		g := <-res
		if err != nil {
			continue // drain
		}
		if err = g.err; err == nil {
			err = s.emitGrain(g)
		}
		if err != nil {
			s.failErr = err
			close(s.failed)
		}
	}
	s.done <- err
}

func (s *StreamWriter) emitGrain(g compressedGrain) error {
	grain := g.lba * SectorSize / s.grainBytes
	if t := grain / maxGTEsPerGT; t != s.gtIndex {
		s.flushGT()
		s.gtIndex, s.gt = t, make([]uint32, maxGTEsPerGT)
	}
	sector := s.pos / SectorSize
	if sector > int64(^uint32(0)) {
		return fmt.Errorf("%w: stream passes 2^32 sectors, the most a grain table entry can address", ErrUnsupported)
	}
	s.gt[grain%maxGTEsPerGT] = uint32(sector)
	s.write(marker{val: uint64(g.lba), size: uint32(len(g.data))}.encode())
	s.write(g.data)
	s.pad()
	return s.err
}

// flushGT writes the current grain table after a GT marker.
func (s *StreamWriter) flushGT() {
	if s.gt == nil {
		return
	}
	s.gd[s.gtIndex] = uint32(s.writeMetadata(markerGT, appendEntries(nil, s.gt)))
	s.gt = nil
}

// writeMetadata writes a metadata marker and data padded to a sector and
// returns the sector the data starts at.
func (s *StreamWriter) writeMetadata(typ uint32, data []byte) int64 {
	s.write(marker{val: uint64((len(data) + SectorSize - 1) / SectorSize), typ: typ}.encode())
	at := s.pos / SectorSize
	s.write(data)
	s.pad()
	return at
}

// Close writes the final partial grain, the last grain table, the grain
// directory, the footer and the end-of-stream marker, and flushes. It does
// not close the underlying writer.
func (s *StreamWriter) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	var err error
	if s.cur != nil {
		// A write that stopped inside a grain: the rest of the grain reads
		// as zeros, and a compressed grain must inflate to its whole
		// length (a grain, or what is left of the disk), so pad it.
		want := min(s.grainBytes, s.size-s.curOff)
		s.cur = append(s.cur, make([]byte, want-int64(len(s.cur)))...)
		err = s.submit()
	}
	close(s.jobs)
	if e := <-s.done; err == nil {
		err = e
	}
	if err != nil {
		return err
	}
	s.flushGT()
	footer := s.header
	footer.GDOffset = uint64(s.writeMetadata(markerGD, appendEntries(nil, s.gd)))
	s.writeMetadata(markerFooter, footer.marshal())
	s.write(make([]byte, SectorSize)) // end of stream
	if s.err == nil {
		s.err = s.out.Flush()
	}
	return s.err
}
