package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// seSparse is the delta format ESXi writes for every snapshot on VMFS6
// (vmdk-format.md, section 4b): a const header at sector 0 locating the
// areas of the file, a volatile header with the journal's state, and a
// grain directory of 64-bit entries naming grain tables of 4096 64-bit
// entries, each of a 4 KiB grain. Nothing free writes it; package
// vmdktest does, for the tests. It is read-only here, as in QEMU.
const (
	seSparseVolatileMagic = 0x00000000cafecafe
	seSparseVersion       = 0x0000000200000001 // 2.1, the only one ESXi writes
	seGrainSectors        = 8
	seGrainBytes          = seGrainSectors * SectorSize
	seGTSectors           = 64 // 4096 entries of 8 bytes
	seGTEntries           = seGTSectors * SectorSize / 8
	seTableSpan           = seGTEntries * seGrainBytes // bytes a grain table covers: 16 MiB

	// A GD entry with a table has 0x10000000 in its high 32 bits and the
	// table's number in the low 32.
	seGDAllocated = 0x10000000

	// Grain table entry types, in the top nibble.
	seGTEUnallocated = 0x0
	seGTEUnmapped    = 0x1 // the guest unmapped (trimmed) it: zeros
	seGTEZero        = 0x2
	seGTEAllocated   = 0x3
)

// errDirtyJournal marks a delta whose journal was not replayed: Check
// reports it as a finding rather than failing.
var errDirtyJournal = errors.New("snapshot was not closed cleanly (unreplayed journal)")

// seArea is one area of a seSparse file, in sectors.
type seArea struct {
	offset, size int64
	what         string
	needed       bool // read here, so it may not be empty
}

func (a seArea) end() int64 { return a.offset + a.size }

// seSparseHeader is the const header (sector 0).
type seSparseHeader struct {
	capacity   int64 // sectors
	reserved   [4]uint64
	volatile   seArea
	journalHdr seArea
	journal    seArea
	gd         seArea
	gts        seArea
	freeBitmap seArea
	backmap    seArea
	grains     seArea
}

func (h *seSparseHeader) areas() []seArea {
	return []seArea{h.volatile, h.journalHdr, h.journal, h.gd, h.gts, h.freeBitmap, h.backmap, h.grains}
}

// parseSESparseHeader decodes and validates the const header: the fixed
// fields (magic, version, grain and table size, flags) and that the areas
// are inside the addressable range and do not overlap each other or the
// header. The reserved fields are kept, not judged: images with
// reserved1 = 0x200 are reported from the field and read fine (QEMU
// refuses every non-zero reserved field, and non-zero padding).
func parseSESparseHeader(b []byte) (*seSparseHeader, error) {
	if len(b) < SectorSize || binary.LittleEndian.Uint64(b) != seSparseMagic {
		return nil, fmt.Errorf("%w: no seSparse const header (magic 0xcafebabe)", ErrCorrupt)
	}
	c := le{b: b, off: 8}
	version, capacity, grain, gt, flags := c.u64(), c.u64(), c.u64(), c.u64(), c.u64()
	h := &seSparseHeader{}
	for i := range h.reserved {
		h.reserved[i] = c.u64()
	}
	for _, a := range []struct {
		to     *seArea
		what   string
		needed bool
	}{
		{&h.volatile, "volatile header", true}, {&h.journalHdr, "journal header", false},
		{&h.journal, "journal", false}, {&h.gd, "grain directory", true},
		{&h.gts, "grain tables", true}, {&h.freeBitmap, "free bitmap", false},
		{&h.backmap, "backmap", false}, {&h.grains, "grains", true},
	} {
		// Clamped so the sums below cannot overflow; the checks refuse it.
		*a.to = seArea{offset: int64(min(c.u64(), maxDiskSectors+1)), size: int64(min(c.u64(), maxDiskSectors+1)), what: a.what, needed: a.needed}
	}
	switch {
	case version != seSparseVersion:
		return nil, fmt.Errorf("%w: seSparse version %#016x (this reader knows %#016x)", ErrUnsupported, version, uint64(seSparseVersion))
	case flags != 0:
		return nil, fmt.Errorf("%w: seSparse flags %#x (none are defined)", ErrUnsupported, flags)
	case grain != seGrainSectors:
		return nil, fmt.Errorf("%w: seSparse grain size %d sectors (version 2.1 has %d)", ErrCorrupt, grain, seGrainSectors)
	case gt != seGTSectors:
		return nil, fmt.Errorf("%w: seSparse grain table size %d sectors (version 2.1 has %d)", ErrCorrupt, gt, seGTSectors)
	case capacity == 0 || capacity > maxDiskSectors:
		return nil, fmt.Errorf("%w: seSparse capacity of %d sectors", ErrCorrupt, capacity)
	}
	h.capacity = int64(capacity)
	areas := h.areas()
	for i, a := range areas {
		switch {
		case a.offset > maxDiskSectors || a.size > maxDiskSectors:
			return nil, fmt.Errorf("%w: seSparse %s at sector %d (%d sectors) is past any disk", ErrCorrupt, a.what, a.offset, a.size)
		case a.size == 0 && a.needed:
			return nil, fmt.Errorf("%w: seSparse %s is empty", ErrCorrupt, a.what)
		case a.size > 0 && a.offset == 0:
			return nil, fmt.Errorf("%w: seSparse %s at sector 0 overlaps the const header", ErrCorrupt, a.what)
		}
		for _, o := range areas[:i] {
			if a.size > 0 && o.size > 0 && a.offset < o.end() && o.offset < a.end() {
				return nil, fmt.Errorf("%w: seSparse %s (sectors %d-%d) overlaps the %s (sectors %d-%d)", ErrCorrupt, a.what, a.offset, a.end(), o.what, o.offset, o.end())
			}
		}
	}
	return h, nil
}

// checkVolatileHeader validates the volatile header (its magic and the
// journal's state) read from sector h.volatile.offset.
func checkVolatileHeader(name string, b []byte) error {
	c := le{b: b}
	magic, _, _, replay := c.u64(), c.u64(), c.u64(), c.u64()
	if magic != seSparseVolatileMagic {
		return fmt.Errorf("%s: %w: seSparse volatile header magic %#x, want 0xcafecafe", name, ErrCorrupt, magic)
	}
	if replay != 0 {
		return fmt.Errorf("%s: %w: %w: its journal holds changes not yet applied to its grain tables; power the VM on and off in ESXi (or consolidate its snapshots) so ESXi replays it, then copy the files again", name, ErrUnsupported, errDirtyJournal)
	}
	return nil
}

// seSparseExtent is a seSparse snapshot delta.
type seSparseExtent struct {
	src      *source
	h        *seSparseHeader
	capacity int64    // bytes
	gd       []uint64 // the entries covering capacity
	// gtArea and grainSlots bound table numbers and stored grain indexes
	// by their areas.
	gtArea, grainSlots int64

	mu     sync.Mutex
	tables map[uint32][]uint64 // by table number: GD entries sharing a table share one copy
	// cacheTables bounds len(tables) (set by shareTableCache; seGTCache
	// before).
	cacheTables int
}

// seGTCache is the default table cache of one extent: 512 tables of 32
// KiB (16 MiB) cover 8 GiB of the disk.
const seGTCache = 512

func (e *seSparseExtent) file() *source { return e.src }

// openSESparse reads a seSparse extent's headers and grain directory,
// bounding every size by its area and by the file, and the directory by
// budget, before allocating.
func openSESparse(src *source, budget *directoryBudget) (*seSparseExtent, error) {
	buf := make([]byte, SectorSize)
	if err := src.readFull(buf, 0, "seSparse const header"); err != nil {
		return nil, err
	}
	h, err := parseSESparseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	if err := src.readFull(buf, h.volatile.offset*SectorSize, "seSparse volatile header"); err != nil {
		return nil, err
	}
	if err := checkVolatileHeader(src.name, buf); err != nil {
		return nil, err
	}
	e := &seSparseExtent{
		src: src, h: h, capacity: h.capacity * SectorSize,
		gtArea: h.gts.size / seGTSectors, grainSlots: h.grains.size / seGrainSectors,
		tables: map[uint32][]uint64{}, cacheTables: seGTCache,
	}
	entries := (e.capacity + seTableSpan - 1) / seTableSpan
	if entries*8 > h.gd.size*SectorSize {
		return nil, fmt.Errorf("%s: %w: seSparse grain directory of %d sectors cannot cover a capacity of %d sectors (%d entries)", src.name, ErrCorrupt, h.gd.size, h.capacity, entries)
	}
	// The file must hold the directory before memory is reserved for it:
	// a small hostile file is corrupt, not too big.
	if end := h.gd.offset*SectorSize + entries*8; end > src.size {
		return nil, fmt.Errorf("%s: %w: File truncated, expecting at least %d bytes for the seSparse grain directory", src.name, ErrCorrupt, end)
	}
	if err := budget.take(src.name, "grain directory", entries*8); err != nil {
		return nil, err
	}
	if e.gd, err = e.readGD(entries); err != nil {
		return nil, err
	}
	return e, nil
}

// readGD reads the first entries of the grain directory in pieces and
// validates each: 0, or 0x10000000 in the high 32 bits and a table number
// inside the grain tables area.
func (e *seSparseExtent) readGD(entries int64) ([]uint64, error) {
	at := e.h.gd.offset * SectorSize
	gd := make([]uint64, entries)
	raw := make([]byte, min(entries*8, 64<<10))
	for i := 0; i < len(gd); {
		piece := raw[:min(len(raw), (len(gd)-i)*8)]
		if err := e.src.readFull(piece, at+int64(i)*8, "seSparse grain directory"); err != nil {
			return nil, err
		}
		for j := 0; j+8 <= len(piece); j, i = j+8, i+1 {
			gd[i] = binary.LittleEndian.Uint64(piece[j:])
			if _, err := e.tableOf(int64(i), gd[i]); err != nil {
				return nil, err
			}
		}
	}
	return gd, nil
}

// tableOf decodes GD entry i: its table's number, or -1 for no table.
func (e *seSparseExtent) tableOf(i int64, v uint64) (int64, error) {
	if v == 0 {
		return -1, nil
	}
	if v>>32 != seGDAllocated {
		return 0, fmt.Errorf("%s: %w: seSparse grain directory entry %d is %#016x (a table's entry has 0x10000000 in its high 32 bits)", e.src.name, ErrCorrupt, i, v)
	}
	t := int64(v & 0xffffffff)
	if t >= e.gtArea {
		return 0, fmt.Errorf("%s: %w: seSparse grain directory entry %d names grain table %d, past the %d tables of the grain tables area", e.src.name, ErrCorrupt, i, t, e.gtArea)
	}
	return t, nil
}
