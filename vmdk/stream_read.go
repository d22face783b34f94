package vmdk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"runtime"
)

// streamReadAhead bounds the buffers (compressed and inflated) of the
// grains a StreamReader holds ahead of its caller.
const streamReadAhead = 32 << 20

// streamSlots bounds the grains in flight: enough for the inflating
// goroutines to run ahead while the caller writes the grain it has
// (2 MiB of 64 KiB grains), so inflate and the write overlap.
const streamSlots = 32

// StreamReader reads a streamOptimized image sequentially from any
// io.Reader (an HTTP body, a pipe) without seeking: every grain marker
// carries its LBA, so grains can be placed as they arrive. Grains are
// inflated on all cores while the stream is read; they are returned in
// stream order.
type StreamReader struct {
	r          *bufio.Reader
	pos        int64 // bytes consumed from the stream
	header     *SparseHeader
	descriptor *Descriptor
	grainBytes int64
	capacity   int64 // bytes the header says the extent holds
	size       int64 // bytes of the disk: what the descriptor's line places
	lastLBA    int64 // LBA of the previous grain, -1 before the first
	proof      *streamProof
	sector     [SectorSize]byte // the parser's marker sector

	// Grains travel in slots, a fixed set reused: the parser fills a free
	// slot's compressed bytes and queues it in order (and for a worker
	// to inflate); Next returns its content and frees it at the next Next.
	free  chan *streamSlot
	order chan *streamSlot
	held  *streamSlot // the grain the last Next returned
	stop  chan struct{}
	done  bool
	err   error
}

// streamSlot is one grain in flight, its buffers kept for the next.
type streamSlot struct {
	lba  int64
	comp []byte // compressed bytes
	out  []byte // inflated content (a grain's worth, allocated once)
	g    Grain
	err  error
	done chan struct{} // one send when g or err is set
}

// Grain is one grain of content from a StreamReader.
type Grain struct {
	Offset int64 // byte offset in the disk
	// Data is the inflated content; shorter than a grain only at the
	// disk's end. It is valid until the next call to Next or Close: the
	// buffer is reused for a later grain.
	Data []byte
}

// NewStreamReader reads the header and descriptor of a streamOptimized
// image and prepares to return its grains.
func NewStreamReader(r io.Reader) (*StreamReader, error) {
	s, err := openStream(r)
	if err != nil {
		return nil, err
	}
	s.start()
	return s, nil
}

// verifyStream reads a whole stream as StreamReader does, without
// inflating its grains, and returns what would stop a sequential reader:
// Check's view of whether a stdin or HTTP import of the file would work.
func verifyStream(r io.Reader) error {
	s, err := openStream(r)
	if err != nil {
		return err
	}
	var buf []byte
	for {
		_, data, err := s.nextCompressed(buf)
		buf = data
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// openStream reads the header, the descriptor and what lies before the
// first grain.
func openStream(r io.Reader) (*StreamReader, error) {
	s := &StreamReader{r: bufio.NewReaderSize(r, 1<<20), lastLBA: -1}
	buf := s.sector[:]
	if err := s.readFull(buf, "sparse header"); err != nil {
		return nil, err
	}
	h, err := parseSparseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	if int64(h.GrainSize)*SectorSize > maxCompressedGrain {
		return nil, fmt.Errorf("stream: %w: grain size %d sectors (compressed grains are limited to %d bytes)", ErrUnsupported, h.GrainSize, maxCompressedGrain)
	}
	if !h.Compressed() || !h.HasMarkers() {
		return nil, fmt.Errorf("%w: stream: not a streamOptimized image (flags %#x): it needs random access", ErrUnsupported, h.Flags)
	}
	s.header, s.grainBytes, s.capacity = h, int64(h.GrainSize)*SectorSize, int64(h.Capacity)*SectorSize
	if h.DescriptorSize == 0 || h.DescriptorOffset == 0 {
		s.descriptor = bareDescriptor("streamOptimized", int64(h.Capacity))
	} else {
		if err := s.skipTo(int64(h.DescriptorOffset) * SectorSize); err != nil {
			return nil, err
		}
		text := make([]byte, h.DescriptorSize*SectorSize)
		if err := s.readFull(text, "embedded descriptor"); err != nil {
			return nil, err
		}
		if s.descriptor, err = ParseDescriptor(text); err != nil {
			return nil, fmt.Errorf("stream: embedded descriptor: %w", err)
		}
	}
	// The disk is what the descriptor's one line places, by Open's rule.
	lines := s.descriptor.Extents
	if len(lines) != 1 || lines[0].Type == ExtentZero || lines[0].Access == AccessNoAccess {
		return nil, fmt.Errorf("%w: stream: a stream holds one data extent, its descriptor lists %d extent lines", ErrUnsupported, len(lines))
	}
	s.size = lines[0].Sectors * SectorSize
	if _, err := fitSparseLine("stream", s.size, s.capacity); err != nil {
		return nil, err
	}
	s.proof = newStreamProof(h)
	if h.GDOffset != gdAtEnd {
		if err := s.readPrefixTables(); err != nil {
			return nil, err
		}
	}
	// The rest of what a writer preallocated before the first grain (qemu's
	// redundant directory and tables) is not needed; skip it.
	if err := s.skipTo(int64(h.OverHead) * SectorSize); err != nil {
		return nil, err
	}
	return s, nil
}

// Header is the stream's sparse header (its gdOffset may be GD_AT_END).
func (s *StreamReader) Header() *SparseHeader { return s.header }

// Descriptor is the stream's embedded descriptor.
func (s *StreamReader) Descriptor() *Descriptor { return s.descriptor }

// Size is the virtual disk size in bytes.
func (s *StreamReader) Size() int64 { return s.size }

func (s *StreamReader) readFull(p []byte, what string) error {
	n, err := io.ReadFull(s.r, p)
	s.pos += int64(n)
	if err != nil {
		if sourceEnded(err) {
			return fmt.Errorf("%w: stream: truncated in %s at byte %d: %w", ErrCorrupt, what, s.pos, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("stream: read %s at byte %d: %w", what, s.pos, err)
	}
	return nil
}

// sourceEnded reports whether err says the source ended: io.EOF, or
// io.ReadFull's io.ErrUnexpectedEOF, themselves. A source's own error
// that merely wraps one of them (a connection cut and retried in vain)
// is that source's failure, kept for the caller to classify, not proof
// that the image is short.
func sourceEnded(err error) bool { return err == io.EOF || err == io.ErrUnexpectedEOF }

func (s *StreamReader) skipTo(off int64) error {
	if off < s.pos {
		return nil
	}
	n, err := s.r.Discard(int(min(off-s.pos, 1<<62)))
	s.pos += int64(n)
	if err != nil {
		if sourceEnded(err) {
			return fmt.Errorf("%w: stream: truncated at byte %d before byte %d: %w", ErrCorrupt, s.pos, off, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("stream: read up to byte %d at byte %d: %w", off, s.pos, err)
	}
	return nil
}

// start runs the parser, which reads markers in order and hands
// compressed grains to a bounded set of inflating goroutines; the order
// channel keeps stream order.
func (s *StreamReader) start() {
	// Grains in flight are bounded in bytes too, so large grains cannot
	// multiply memory by the slot count.
	slotBytes := s.grainBytes + maxCompressedSize(s.grainBytes)
	slots := int(max(1, min(streamSlots, streamReadAhead/slotBytes)))
	workers := min(runtime.GOMAXPROCS(0), slots)
	s.free = make(chan *streamSlot, slots)
	for range slots {
		s.free <- &streamSlot{done: make(chan struct{}, 1)}
	}
	// Each queue has room for every slot: sends to them never block.
	s.order = make(chan *streamSlot, slots)
	work := make(chan *streamSlot, slots)
	s.stop = make(chan struct{})
	for range workers {
		go func() {
			for sl := range work {
				s.inflateSlot(sl)
				sl.done <- struct{}{}
			}
		}()
	}
	go func() {
		defer close(s.order)
		defer close(work)
		for {
			var sl *streamSlot
			select {
			case sl = <-s.free:
			case <-s.stop:
				return
			}
			lba, data, err := s.nextCompressed(sl.comp)
			sl.comp = data
			if err != nil {
				sl.err = err
				sl.done <- struct{}{}
				s.order <- sl
				return
			}
			sl.lba = lba
			s.order <- sl
			work <- sl
		}
	}()
}

// inflateSlot inflates sl's grain into sl's buffer. A panic becomes the
// grain's error: this runs where no caller can recover.
func (s *StreamReader) inflateSlot(sl *streamSlot) {
	defer func() {
		if r := recover(); r != nil {
			sl.err = fmt.Errorf("vmdk: internal error: stream: grain at LBA %d: %v", sl.lba, r)
		}
	}()
	off := sl.lba * SectorSize
	if sl.out == nil {
		sl.out = make([]byte, s.grainBytes)
	}
	out := sl.out[:min(s.grainBytes, s.capacity-off)]
	if err := inflate(out, sl.comp); err != nil {
		sl.err = fmt.Errorf("%w: stream: grain at LBA %d: %v", ErrCorrupt, sl.lba, err)
		return
	}
	sl.g = Grain{Offset: off, Data: out[:min(int64(len(out)), s.size-off)]}
}

// Next returns the next grain in stream order, or io.EOF once the stream
// has proved it ended (its grain directory and tables list exactly the
// grains returned; a footer-layout stream reached its end-of-stream
// marker). A stream cut short fails with ErrCorrupt and
// io.ErrUnexpectedEOF instead; grains already returned came before the
// cut, so a caller must not treat what it wrote as the disk until io.EOF.
// All-zero grains are absent from a stream: ranges Next never returns read
// as zeros. The grain's Data is valid until the next Next or Close.
func (s *StreamReader) Next() (Grain, error) {
	if s.err != nil {
		return Grain{}, s.err
	}
	if s.done {
		return Grain{}, errors.New("vmdk: stream: Next after Close")
	}
	if sl := s.held; sl != nil {
		s.held = nil
		sl.g, sl.err = Grain{}, nil
		s.free <- sl // room for every slot: never blocks
	}
	sl, ok := <-s.order
	if !ok {
		return Grain{}, errors.New("vmdk: internal error: stream: the parser stopped without a reason")
	}
	<-sl.done
	if sl.err != nil {
		s.err = sl.err
		s.Close()
		return Grain{}, sl.err
	}
	s.held = sl
	return sl.g, nil
}

// Close stops the background parser without waiting for it: a parser
// blocked reading a stalled source exits once that read returns (close the
// source to make it return). Close does not close the underlying reader.
func (s *StreamReader) Close() error {
	if !s.done {
		s.done = true
		close(s.stop)
	}
	return nil
}

// nextCompressed reads markers up to the next grain and returns its LBA and
// compressed data, in buf when it has room (the returned slice is buf,
// grown, even with an error: keep it for the next call); io.EOF at the
// end of the stream, once the stream has proved it ended there (see
// streamProof).
func (s *StreamReader) nextCompressed(buf []byte) (int64, []byte, error) {
	sector := s.sector[:]
	for {
		at := s.pos
		n, err := io.ReadFull(s.r, sector)
		s.pos += int64(n)
		switch {
		case err == io.EOF:
			// A clean end where a marker belongs: the end of qemu's layout,
			// which has no end-of-stream marker, or a truncated stream.
			return 0, buf, s.end(false)
		case err == io.ErrUnexpectedEOF:
			return 0, buf, fmt.Errorf("%w: stream: ends inside a sector at byte %d: %w", ErrCorrupt, s.pos, io.ErrUnexpectedEOF)
		case err != nil:
			return 0, buf, fmt.Errorf("stream: read marker at byte %d: %w", at, err)
		}
		if isZero(sector) {
			if err := s.drainPadding(at); err != nil {
				return 0, buf, err
			}
			return 0, buf, s.end(true)
		}
		if s.proof.footer {
			return 0, buf, fmt.Errorf("%w: stream: a marker at byte %d follows the footer; only the end-of-stream marker may", ErrCorrupt, at)
		}
		m := parseMarker(sector)
		if m.size == 0 {
			if err := s.readMetadata(m, at); err != nil {
				return 0, buf, err
			}
			continue
		}
		if err := m.grainErr(s.grainBytes, s.capacity); err != nil {
			return 0, buf, fmt.Errorf("%w: stream: grain marker at byte %d: %v", ErrCorrupt, at, err)
		}
		lba := int64(m.val)
		if lba <= s.lastLBA {
			return 0, buf, fmt.Errorf("%w: stream: grain at LBA %d follows LBA %d; out-of-order streams need random access", ErrUnsupported, lba, s.lastLBA)
		}
		s.lastLBA = lba
		s.proof.grain(lba, at/SectorSize)
		// The compressed bytes start inside the marker's sector; the grain
		// is padded to a sector boundary.
		if cap(buf) < int(m.size) {
			// Grown geometrically up to the bound grainErr checked, so a
			// run of growing grains does not reallocate each time.
			limit := int(maxCompressedSize(s.grainBytes))
			buf = make([]byte, 0, max(int(m.size), min(2*cap(buf), limit)))
		}
		data := buf[:m.size]
		n = copy(data, sector[grainMarkerSize:])
		if err := s.readFull(data[n:], "compressed grain"); err != nil {
			return 0, buf, err
		}
		if err := s.skipTo(at + (grainMarkerSize+int64(m.size)+SectorSize-1)/SectorSize*SectorSize); err != nil {
			return 0, buf, err
		}
		if lba*SectorSize >= s.size {
			continue // past what the descriptor's line places: not in the disk
		}
		return lba, data, nil
	}
}

// end returns io.EOF when the stream has proved it ended, else why not.
func (s *StreamReader) end(eos bool) error {
	if s.header.GDOffset == gdAtEnd && !eos {
		return fmt.Errorf("%w: stream: ends at byte %d without an end-of-stream marker: truncated: %w", ErrCorrupt, s.pos, io.ErrUnexpectedEOF)
	}
	if err := s.proof.finish(eos); err != nil {
		if !eos {
			// It stopped where a marker belongs and its tables want
			// more: a stream cut at a marker boundary.
			return fmt.Errorf("%w: %w", err, io.ErrUnexpectedEOF)
		}
		return err
	}
	return io.EOF
}
