package vmdk

import (
	"encoding/binary"
	"fmt"
)

const (
	// SectorSize is the unit of every VMDK offset and size.
	SectorSize = 512

	// maxDiskSectors bounds any size read from untrusted input (512 TiB,
	// well above VMware's 62 TiB limit) so sector arithmetic cannot overflow.
	maxDiskSectors = 1 << 40

	magicKDMV = "KDMV"
	magicCOWD = "COWD"

	// Hosted sparse header flags.
	flagNewlineCheck = 1 << 0
	flagRedundantGT  = 1 << 1
	flagZeroedGTE    = 1 << 2
	flagCompressed   = 1 << 16
	flagMarkers      = 1 << 17

	// gdAtEnd in the header's gdOffset means "read the footer".
	gdAtEnd = 0xffffffffffffffff

	compressionNone    = 0
	compressionDeflate = 1

	// Limits QEMU also enforces: grain size ("invalid granularity"), GT size
	// ("L2 table size too big") and GD size ("L1 size too big").
	maxGrainSectors = 0x200000
	maxGTEsPerGT    = 512
	maxGDEntries    = 32 << 20

	cowdHeaderSize = 2048
	cowdGTEsPerGT  = 4096
)

// SparseHeader is the 512-byte header of a hosted sparse extent ("KDMV").
type SparseHeader struct {
	Version           uint32
	Flags             uint32
	Capacity          uint64 // sectors
	GrainSize         uint64 // sectors
	DescriptorOffset  uint64 // sectors
	DescriptorSize    uint64 // sectors
	NumGTEsPerGT      uint32
	RGDOffset         uint64 // sectors
	GDOffset          uint64 // sectors, or gdAtEnd
	OverHead          uint64 // sectors before the first grain
	UncleanShutdown   bool
	CompressAlgorithm uint16
}

// Compressed reports whether grains are deflate-compressed (streamOptimized).
func (h *SparseHeader) Compressed() bool { return h.Flags&flagCompressed != 0 }

// HasMarkers reports whether grains carry a 12-byte marker (LBA, size).
func (h *SparseHeader) HasMarkers() bool { return h.Flags&flagMarkers != 0 }

// ZeroedGTE reports whether GTE value 1 means "zeroed grain".
func (h *SparseHeader) ZeroedGTE() bool { return h.Flags&flagZeroedGTE != 0 }

// RedundantGT reports whether a redundant GD/GT copy exists at RGDOffset.
func (h *SparseHeader) RedundantGT() bool { return h.Flags&flagRedundantGT != 0 }

// le is a little-endian cursor over a fixed buffer; reads past the end
// yield zeros rather than panicking (callers size the buffer first).
type le struct {
	b   []byte
	off int
}

func (c *le) take(n int) []byte {
	if c.off+n > len(c.b) {
		c.off = len(c.b)
		return make([]byte, n)
	}
	p := c.b[c.off : c.off+n]
	c.off += n
	return p
}
func (c *le) u8() uint8   { return c.take(1)[0] }
func (c *le) u16() uint16 { return binary.LittleEndian.Uint16(c.take(2)) }
func (c *le) u32() uint32 { return binary.LittleEndian.Uint32(c.take(4)) }
func (c *le) u64() uint64 { return binary.LittleEndian.Uint64(c.take(8)) }

// ParseSparseHeader decodes and validates the KDMV header at the start of
// b (at least one sector), e.g. to tell a stream from the first bytes of a
// download.
func ParseSparseHeader(b []byte) (*SparseHeader, error) { return parseSparseHeader(b) }

// parseSparseHeader decodes and validates a KDMV header. It checks the
// fields in isolation; checks against the file size come later.
func parseSparseHeader(b []byte) (*SparseHeader, error) {
	if len(b) < SectorSize || string(b[:4]) != magicKDMV {
		return nil, fmt.Errorf("%w: no KDMV sparse header", ErrCorrupt)
	}
	c := le{b: b, off: 4}
	h := &SparseHeader{
		Version:          c.u32(),
		Flags:            c.u32(),
		Capacity:         c.u64(),
		GrainSize:        c.u64(),
		DescriptorOffset: c.u64(),
		DescriptorSize:   c.u64(),
		NumGTEsPerGT:     c.u32(),
		RGDOffset:        c.u64(),
		GDOffset:         c.u64(),
		OverHead:         c.u64(),
		UncleanShutdown:  c.u8() != 0,
	}
	c.take(4) // newline-detection bytes "\n \r\n"
	h.CompressAlgorithm = c.u16()
	return h, h.validate()
}

func (h *SparseHeader) validate() error {
	switch {
	case h.Version < 1 || h.Version > 3:
		return fmt.Errorf("%w: sparse header version %d", ErrUnsupported, h.Version)
	case h.Capacity > maxDiskSectors:
		return fmt.Errorf("%w: capacity %d sectors is absurd", ErrCorrupt, h.Capacity)
	case h.GrainSize <= 8 || h.GrainSize > maxGrainSectors || h.GrainSize&(h.GrainSize-1) != 0:
		return fmt.Errorf("%w: invalid granularity: grain size %d sectors (want a power of two in 16..%d)", ErrCorrupt, h.GrainSize, maxGrainSectors)
	case h.NumGTEsPerGT == 0 || h.NumGTEsPerGT > maxGTEsPerGT:
		return fmt.Errorf("%w: L2 table size too big: %d entries per grain table (limit %d)", ErrCorrupt, h.NumGTEsPerGT, maxGTEsPerGT)
	case h.DescriptorSize > maxDescriptorBytes/SectorSize:
		return fmt.Errorf("%w: embedded descriptor of %d sectors is too big", ErrCorrupt, h.DescriptorSize)
	case h.DescriptorOffset > maxDiskSectors || h.OverHead > maxDiskSectors || h.RGDOffset > maxDiskSectors ||
		(h.GDOffset > maxDiskSectors && h.GDOffset != gdAtEnd):
		return fmt.Errorf("%w: header offsets out of range", ErrCorrupt)
	case h.Compressed() && h.CompressAlgorithm != compressionDeflate:
		return fmt.Errorf("%w: compression algorithm %d", ErrUnsupported, h.CompressAlgorithm)
	}
	if gd := h.gdEntries(); gd > maxGDEntries {
		return fmt.Errorf("%w: L1 size too big: %d grain directory entries (limit %d)", ErrCorrupt, gd, maxGDEntries)
	}
	return nil
}

// gdEntries is the number of grain tables needed to cover the capacity.
func (h *SparseHeader) gdEntries() uint64 {
	span := h.GrainSize * uint64(h.NumGTEsPerGT)
	return (h.Capacity + span - 1) / span
}

// marshal encodes the header into a 512-byte sector.
func (h *SparseHeader) marshal() []byte {
	b := make([]byte, SectorSize)
	copy(b, magicKDMV)
	le32 := binary.LittleEndian.PutUint32
	le64 := binary.LittleEndian.PutUint64
	le32(b[4:], h.Version)
	le32(b[8:], h.Flags)
	le64(b[12:], h.Capacity)
	le64(b[20:], h.GrainSize)
	le64(b[28:], h.DescriptorOffset)
	le64(b[36:], h.DescriptorSize)
	le32(b[44:], h.NumGTEsPerGT)
	le64(b[48:], h.RGDOffset)
	le64(b[56:], h.GDOffset)
	le64(b[64:], h.OverHead)
	if h.UncleanShutdown {
		b[72] = 1
	}
	copy(b[73:], "\n \r\n")
	binary.LittleEndian.PutUint16(b[77:], h.CompressAlgorithm)
	return b
}

// cowdHeader is the 2048-byte header of a VMDK3 / vmfsSparse extent.
type cowdHeader struct {
	Version      uint32
	Flags        uint32
	Capacity     uint32 // sectors
	GrainSize    uint32 // sectors
	GDOffset     uint32 // sectors
	NumGDEntries uint32
	FreeSector   uint32
}

func parseCOWDHeader(b []byte) (*cowdHeader, error) {
	if len(b) < cowdHeaderSize || string(b[:4]) != magicCOWD {
		return nil, fmt.Errorf("%w: no COWD sparse header", ErrCorrupt)
	}
	c := le{b: b, off: 4}
	h := &cowdHeader{
		Version:      c.u32(),
		Flags:        c.u32(),
		Capacity:     c.u32(),
		GrainSize:    c.u32(),
		GDOffset:     c.u32(),
		NumGDEntries: c.u32(),
		FreeSector:   c.u32(),
	}
	switch {
	case h.Version != 1:
		return nil, fmt.Errorf("%w: COWD header version %d", ErrUnsupported, h.Version)
	case h.GrainSize == 0 || h.GrainSize > maxGrainSectors || h.GrainSize&(h.GrainSize-1) != 0:
		return nil, fmt.Errorf("%w: invalid granularity: COWD grain size %d sectors", ErrCorrupt, h.GrainSize)
	case h.NumGDEntries > maxGDEntries:
		return nil, fmt.Errorf("%w: L1 size too big: %d COWD grain directory entries", ErrCorrupt, h.NumGDEntries)
	case uint64(h.NumGDEntries)*cowdGTEsPerGT*uint64(h.GrainSize) < uint64(h.Capacity):
		return nil, fmt.Errorf("%w: COWD grain directory of %d entries does not cover %d sectors", ErrCorrupt, h.NumGDEntries, h.Capacity)
	}
	return h, nil
}
