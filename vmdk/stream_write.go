package vmdk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
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
//
// A fixed set of grain jobs (2 per worker, each with its grain buffer and
// its compressed output) circulates: Write fills one, the workers
// compress it, the emitter writes it out in grain order and hands it back.
// Nothing is allocated per grain, and memory is bounded by the jobs.
type StreamWriter struct {
	out        *bufio.Writer
	pos        int64 // bytes written to out
	header     SparseHeader
	grainBytes int64
	size       int64
	level      int
	desc       *Descriptor

	cur     *grainJob // the grain being filled
	written int64     // content bytes accepted so far

	gd      []uint32
	gt      []uint32 // current grain table
	gtIndex int64    // index of gt, -1 before the first grain

	free     chan *grainJob // jobs not in use
	todo     chan *grainJob // to compress, any order
	order    chan *grainJob // submitted, in grain order, for the emitter
	done     chan error     // the emitter's result, after order closes
	failed   chan struct{}  // closed by the emitter on its first error
	failErr  error          // that error, set before failed closes
	compress sync.WaitGroup // the workers
	head     []byte         // the emitter's grain marker
	err      error
	closed   bool
}

// grainJob is one grain on its way through the writer.
type grainJob struct {
	lba  int64
	data []byte        // the grain's content, up to a grain
	out  bytes.Buffer  // its zlib stream
	err  error         // from compressing it
	done chan struct{} // a worker finished it
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
	// Two jobs per worker: one being compressed, one filled or waiting
	// for the emitter meanwhile.
	jobs := 2 * opts.Workers
	s.free = make(chan *grainJob, jobs)
	s.todo = make(chan *grainJob, jobs)
	s.order = make(chan *grainJob, jobs)
	for range jobs {
		s.free <- &grainJob{done: make(chan struct{}, 1)}
	}
	s.done = make(chan error, 1)
	s.failed = make(chan struct{})
	for range opts.Workers {
		s.compress.Go(func() { compressGrains(s.todo, s.level) })
	}
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
		s.write(zeroBlock[:SectorSize-r])
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
			if err := s.take(); err != nil {
				return n, err
			}
		}
		j := s.cur
		k := int(min(int64(len(p)-n), s.grainBytes-int64(len(j.data))))
		j.data = append(j.data, p[n:n+k]...)
		n += k
		s.written += int64(k)
		if int64(len(j.data)) == s.grainBytes {
			if err := s.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// take makes a free job the grain being filled, from the content position
// on, waiting for the emitter to finish one if all are in use.
func (s *StreamWriter) take() error {
	select {
	case j := <-s.free:
		if j.data == nil {
			j.data = make([]byte, 0, s.grainBytes)
		}
		j.data, j.lba = j.data[:0], s.written/SectorSize
		s.cur = j
		return nil
	case <-s.failed:
		return fmt.Errorf("vmdk: stream output failed: %w", s.failErr)
	}
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
		fill := min(off-s.written, s.grainBytes-int64(len(s.cur.data)))
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

// submit hands the filled grain to the workers and the emitter, keeping
// grain order; a grain of zeros goes back to the free jobs.
func (s *StreamWriter) submit() error {
	j := s.cur
	s.cur = nil
	if isZero(j.data) {
		s.free <- j // never blocks: the jobs are the channel's capacity
		return nil
	}
	select {
	case <-s.failed:
		s.free <- j
		return fmt.Errorf("vmdk: stream output failed: %w", s.failErr)
	default:
	}
	// Neither send blocks: a job is in at most one of order and todo at
	// a time, and each holds every job.
	s.order <- j
	s.todo <- j
	return nil
}

// compressGrains is a worker: it compresses the jobs of todo at level
// until todo closes, with one deflate writer for all of them. The zlib
// framing (RFC 1950) is written here rather than by a zlib.Writer so the
// checksum is the package's adler32 (several times hash/adler32's speed);
// the header is the one zlib.Writer writes, so the bytes are the same.
func compressGrains(todo <-chan *grainJob, level int) {
	var fw *flate.Writer
	head := zlibHeader(level)
	for j := range todo {
		j.out.Reset()
		j.out.Write(head[:])
		j.err = nil
		if fw == nil {
			fw, j.err = flate.NewWriter(&j.out, level)
		} else {
			fw.Reset(&j.out)
		}
		if j.err == nil {
			_, j.err = fw.Write(j.data)
		}
		if j.err == nil {
			j.err = fw.Close()
		}
		var sum [4]byte
		binary.BigEndian.PutUint32(sum[:], adler32(j.data))
		j.out.Write(sum[:])
		j.done <- struct{}{}
	}
}

// zlibHeader is RFC 1950's header for a deflate stream with a 32 KiB
// window at level (1-9): FLEVEL as zlib sets it, FCHECK making the pair a
// multiple of 31.
func zlibHeader(level int) [2]byte {
	h := [2]byte{0x78, 0}
	switch {
	case level <= 1:
		h[1] = 0 << 6
	case level <= 5:
		h[1] = 1 << 6
	case level == 6:
		h[1] = 2 << 6
	default:
		h[1] = 3 << 6
	}
	h[1] += uint8(31 - binary.BigEndian.Uint16(h[:])%31)
	return h
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
// table's grains, and frees their jobs.
func (s *StreamWriter) emit() {
	var err error
	for j := range s.order {
		<-j.done
		if err == nil {
			if err = j.err; err == nil {
				err = s.emitGrain(j.lba, j.out.Bytes())
			}
			if err != nil {
				s.failErr = err
				close(s.failed)
			}
		}
		s.free <- j
	}
	s.done <- err
}

func (s *StreamWriter) emitGrain(lba int64, data []byte) error {
	grain := lba * SectorSize / s.grainBytes
	if t := grain / maxGTEsPerGT; t != s.gtIndex {
		s.flushGT()
		s.gtIndex, s.gt = t, make([]uint32, maxGTEsPerGT)
	}
	sector := s.pos / SectorSize
	if sector > int64(^uint32(0)) {
		return fmt.Errorf("%w: stream passes 2^32 sectors, the most a grain table entry can address", ErrUnsupported)
	}
	s.gt[grain%maxGTEsPerGT] = uint32(sector)
	s.head = marker{val: uint64(lba), size: uint32(len(data))}.appendTo(s.head[:0])
	s.write(s.head)
	s.write(data)
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
		j := s.cur
		want := min(s.grainBytes, s.size-j.lba*SectorSize)
		j.data = append(j.data, make([]byte, want-int64(len(j.data)))...)
		err = s.submit()
	}
	close(s.todo)
	close(s.order)
	s.compress.Wait()
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
