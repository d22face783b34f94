package vmdk

import (
	"encoding/binary"
	"fmt"
	"math"
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

// parseMarker decodes the marker at the start of b, which holds at least
// grainMarkerSize bytes; a metadata marker's type is read only when b holds
// it (a whole marker sector). It is the one decoder of markers.
func parseMarker(b []byte) marker {
	m := marker{
		val:  binary.LittleEndian.Uint64(b[0:]),
		size: binary.LittleEndian.Uint32(b[8:]),
	}
	if len(b) >= 16 {
		m.typ = binary.LittleEndian.Uint32(b[12:])
	}
	return m
}

// encode returns the marker's bytes: the 12-byte head of a grain marker
// (the compressed data follows it), or the whole sector of a metadata
// marker (size 0).
func (m marker) encode() []byte { return m.appendTo(nil) }

// appendTo appends the marker's bytes (as encode returns them) to b: a
// writer that reuses b allocates nothing per grain.
func (m marker) appendTo(b []byte) []byte {
	n := grainMarkerSize
	if m.size == 0 {
		n = SectorSize
	}
	start := len(b)
	b = append(b, make([]byte, n)...)
	binary.LittleEndian.PutUint64(b[start:], m.val)
	binary.LittleEndian.PutUint32(b[start+8:], m.size)
	if m.size == 0 {
		binary.LittleEndian.PutUint32(b[start+12:], m.typ)
	}
	return b
}

// grainErr validates a grain marker of an extent with grainBytes grains
// and capacity bytes: its compressed size must be 1..maxCompressedSize and
// its LBA must start a grain inside the capacity. Callers wrap the error
// with ErrCorrupt and where the marker was.
func (m marker) grainErr(grainBytes, capacity int64) error {
	if limit := maxCompressedSize(grainBytes); m.size == 0 || int64(m.size) > limit {
		return fmt.Errorf("compressed size %d (limit %d)", m.size, limit)
	}
	if m.val%uint64(grainBytes/SectorSize) != 0 || m.val >= uint64(capacity/SectorSize) {
		return fmt.Errorf("LBA %d (capacity %d sectors)", m.val, capacity/SectorSize)
	}
	return nil
}

// maxCompressedSize bounds a compressed grain: deflate's worst case is a few
// bytes per 16 KiB stored block, so anything beyond this is corrupt.
func maxCompressedSize(grainBytes int64) int64 {
	return grainBytes + grainBytes/8 + 1024
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
		if err := m.grainErr(e.grainBytes, e.capacity); err != nil {
			return fmt.Errorf("%s: %w: grain marker at byte %d: %v", e.src.name, ErrCorrupt, pos, err)
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
