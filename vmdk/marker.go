package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zlib"
)

// Stream markers: every marker starts a sector. A grain marker is
// {u64 LBA, u32 compressed size, data...}; a metadata marker has size 0 and a
// type word, padded to a sector, followed by val sectors of metadata; the
// end-of-stream marker is a zero sector.
const (
	grainMarkerSize = 12

	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3
)

type marker struct {
	val  uint64 // LBA for grain markers, metadata sectors otherwise
	size uint32 // compressed bytes; 0 for metadata markers
	typ  uint32 // metadata marker type (meaningless when size != 0)
}

func parseMarker(b []byte) marker {
	return marker{
		val:  binary.LittleEndian.Uint64(b[0:]),
		size: binary.LittleEndian.Uint32(b[8:]),
		typ:  binary.LittleEndian.Uint32(b[12:]),
	}
}

// maxCompressedSize bounds a compressed grain: deflate's worst case is a few
// bytes per 16 KiB stored block, so anything beyond this is corrupt.
func maxCompressedSize(grainBytes int64) int64 {
	return grainBytes + grainBytes/8 + 1024
}

// isZlib reports whether b starts with an RFC 1950 header. Every real writer
// emits zlib although the spec says deflate, so both are accepted.
func isZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

var (
	zlibReaders  sync.Pool // io.ReadCloser implementing zlib.Resetter
	flateReaders sync.Pool // io.ReadCloser implementing flate.Resetter
)

// inflate decompresses src into dst, which must receive exactly len(dst)
// bytes; a stream that inflates to more or fewer is an error.
func inflate(dst, src []byte) error {
	br := bytes.NewReader(src)
	var r io.Reader
	if isZlib(src) {
		if zr, ok := zlibReaders.Get().(io.ReadCloser); ok {
			if err := zr.(zlib.Resetter).Reset(br, nil); err != nil {
				return err
			}
			r = zr
			defer zlibReaders.Put(zr)
		} else {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return err
			}
			r = zr
			defer zlibReaders.Put(zr)
		}
	} else {
		fr, ok := flateReaders.Get().(io.ReadCloser)
		if ok {
			if err := fr.(flate.Resetter).Reset(br, nil); err != nil {
				return err
			}
		} else {
			fr = flate.NewReader(br)
		}
		r = fr
		defer flateReaders.Put(fr)
	}
	n, err := io.ReadFull(r, dst)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("inflated to %d bytes, want %d", n, len(dst))
		}
		return fmt.Errorf("inflate: %w", err)
	}
	// Reading on verifies the zlib checksum and catches over-long data.
	var extra [1]byte
	switch n, err := r.Read(extra[:]); {
	case n > 0:
		return fmt.Errorf("inflates to more than %d bytes", len(dst))
	case err != nil && err != io.EOF:
		return fmt.Errorf("inflate: %w", err)
	}
	return nil
}

// scanMarkers indexes a stream image that has no grain directory by walking
// its markers from the first grain. The walk must end at an end-of-stream
// marker or a footer: a stream cut short is reported, never read as zeros.
func (e *sparseExtent) scanMarkers() error {
	h := e.header
	pos := int64(h.OverHead) * SectorSize
	if pos == 0 {
		pos = int64(h.DescriptorOffset+h.DescriptorSize) * SectorSize
	}
	pos = max(pos, SectorSize)
	e.pinned = true
	var buf [SectorSize]byte
	maxCompressed := maxCompressedSize(e.grainBytes)
	for {
		if pos+SectorSize > e.src.size {
			return fmt.Errorf("%s: %w: stream ends at byte %d without an end-of-stream marker", e.src.name, ErrCorrupt, e.src.size)
		}
		if err := e.src.readFull(buf[:], pos, "stream marker"); err != nil {
			return err
		}
		m := parseMarker(buf[:])
		if m.size == 0 {
			switch m.typ {
			case markerEOS:
				if pos+SectorSize == e.src.size {
					return nil
				}
				// A zero sector before the end is padding (a writer that
				// understated overHead), not the end of the stream.
				pos += SectorSize
				continue
			case markerFooter:
				return nil
			case markerGT, markerGD:
				if m.val > uint64(e.src.size/SectorSize) {
					return fmt.Errorf("%s: %w: metadata marker at byte %d claims %d sectors", e.src.name, ErrCorrupt, pos, m.val)
				}
				pos += SectorSize + int64(m.val)*SectorSize
				continue
			default:
				return fmt.Errorf("%s: %w: unknown marker type %d at byte %d", e.src.name, ErrCorrupt, m.typ, pos)
			}
		}
		if int64(m.size) > maxCompressed {
			return fmt.Errorf("%s: %w: grain marker at byte %d has compressed size %d (limit %d)", e.src.name, ErrCorrupt, pos, m.size, maxCompressed)
		}
		if m.val%uint64(e.grainBytes/SectorSize) != 0 || m.val >= uint64(e.capacity/SectorSize) {
			return fmt.Errorf("%s: %w: grain marker at byte %d has LBA %d (capacity %d sectors)", e.src.name, ErrCorrupt, pos, m.val, e.capacity/SectorSize)
		}
		if pos/SectorSize > math.MaxUint32 || (e.zeroedGTE && pos/SectorSize == 1) {
			return fmt.Errorf("%s: %w: grain at byte %d is past what a grain table entry can address", e.src.name, ErrCorrupt, pos)
		}
		g := int64(m.val) / (e.grainBytes / SectorSize)
		i := uint32(g / e.gtEntries)
		gt := e.tables[i]
		if gt == nil {
			gt = make([]uint32, e.gtEntries)
			e.tables[i] = gt
		}
		gt[g%e.gtEntries] = uint32(pos / SectorSize)
		pos += (grainMarkerSize + int64(m.size) + SectorSize - 1) / SectorSize * SectorSize
	}
}
