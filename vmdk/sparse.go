package vmdk

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// gtCacheTables bounds the grain tables kept in memory per extent: 4096
// tables of 2 KiB (8 MiB) cover 128 GiB of a disk with default grains.
const gtCacheTables = 4096

// gtCacheBytes bounds the grain tables kept in memory by all the extents
// of one Open together (see shareTableCache): a descriptor of thousands
// of sparse extents must not keep gtCacheTables of each.
const gtCacheBytes = 16 << 20

// sparseExtent is a hosted sparse ("KDMV", including streamOptimized) or
// COWD/vmfsSparse extent: a grain directory (GD) of grain tables (GT) whose
// entries (GTE) give each grain's sector in the file.
type sparseExtent struct {
	src        *source
	header     *SparseHeader // nil for COWD
	grainBytes int64
	gtEntries  int64    // GTEs per GT
	capacity   int64    // bytes covered by the tables
	gd         []uint32 // sector of each GT; 0 = no table
	zeroedGTE  bool     // GTE 1 means a zeroed grain
	compressed bool
	markers    bool

	mu     sync.Mutex
	tables map[uint32][]uint32 // GD index -> GT
	// shared maps a GT's sector to a GD index whose entry in tables holds
	// it, so GD entries that share one table share one copy (a hostile GD
	// pointing every entry at one table costs one read, not one each).
	shared map[uint32]uint32
	pinned bool     // tables built by scanning: never evicted
	rgd    []uint32 // redundant GD, when the header has one

	// cacheTables bounds len(tables) below gtCacheTables when set.
	cacheTables int
	// budget bounds the grain directories of one Open.
	budget *directoryBudget

	// Write state (guarded by the disk's write lock).
	dirty    map[uint32]bool // GTs changed in memory since the last flush
	nextFree int64           // sector where the next new grain goes
	guard    *grainGuard     // built on the first write through an entry
	cowdGD   int64           // COWD: the grain directory's sector (KDMV: in header)
	unsynced bool            // written since the last sync (grains overwritten in place dirty no table)
	last     struct {        // last inflated grain, for small reads
		index int64
		data  []byte
	}
}

func (e *sparseExtent) file() *source { return e.src }

// openKDMV reads a hosted sparse extent's header, footer and grain
// directory, bounding every size by the file's size and the directories
// by budget before allocating.
func openKDMV(src *source, budget *directoryBudget) (*sparseExtent, error) {
	buf := make([]byte, SectorSize)
	if err := src.readFull(buf, 0, "sparse header"); err != nil {
		return nil, err
	}
	h, err := parseSparseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	if h.GDOffset == gdAtEnd {
		footer, err := readFooter(src)
		if err != nil {
			return nil, err
		}
		if footer != nil {
			h = footer
		}
	}
	if h.Compressed() && int64(h.GrainSize)*SectorSize > maxCompressedGrain {
		return nil, fmt.Errorf("%s: %w: compressed grains of %d sectors (limit %d bytes)", src.name, ErrUnsupported, h.GrainSize, maxCompressedGrain)
	}
	e := &sparseExtent{
		src:        src,
		header:     h,
		grainBytes: int64(h.GrainSize) * SectorSize,
		gtEntries:  int64(h.NumGTEsPerGT),
		capacity:   int64(h.Capacity) * SectorSize,
		zeroedGTE:  h.ZeroedGTE(),
		compressed: h.Compressed(),
		markers:    h.HasMarkers(),
		tables:     map[uint32][]uint32{},
		budget:     budget,
	}
	if h.GDOffset == gdAtEnd {
		// No footer: a stream whose grain markers are the only index
		// (a writer that never wrote its GD, or a truncated upload).
		if !e.markers {
			return nil, fmt.Errorf("%s: %w: grain directory at end but no footer", src.name, ErrCorrupt)
		}
		if err := e.scanMarkers(); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := e.loadGD(int64(h.GDOffset), h.gdEntries()); err != nil {
		return nil, err
	}
	if h.RedundantGT() && h.RGDOffset != 0 && !e.compressed {
		if e.rgd, err = e.readGD(int64(h.RGDOffset), h.gdEntries(), "redundant grain directory"); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// readFooter returns the footer header of a stream image (the last two
// sectors are footer and end-of-stream, the footer's marker before them), or
// nil when the file has no valid footer.
func readFooter(src *source) (*SparseHeader, error) {
	if src.size < 4*SectorSize || src.size%SectorSize != 0 {
		return nil, nil
	}
	buf := make([]byte, 3*SectorSize)
	if err := src.readFull(buf, src.size-3*SectorSize, "footer"); err != nil {
		return nil, err
	}
	m := parseMarker(buf[:SectorSize])
	if m.size != 0 || m.typ != markerFooter || string(buf[SectorSize:SectorSize+4]) != magicKDMV {
		return nil, nil
	}
	h, err := parseSparseHeader(buf[SectorSize : 2*SectorSize])
	if err != nil {
		return nil, fmt.Errorf("%s: footer: %w", src.name, err)
	}
	if h.GDOffset == gdAtEnd {
		return nil, fmt.Errorf("%s: %w: footer has no grain directory offset", src.name, ErrCorrupt)
	}
	return h, nil
}

// openCOWD reads a VMDK3 / vmfsSparse extent.
func openCOWD(src *source, budget *directoryBudget) (*sparseExtent, error) {
	buf := make([]byte, cowdHeaderSize)
	if err := src.readFull(buf, 0, "COWD header"); err != nil {
		return nil, err
	}
	h, err := parseCOWDHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	e := &sparseExtent{
		src:        src,
		grainBytes: int64(h.GrainSize) * SectorSize,
		gtEntries:  cowdGTEsPerGT,
		capacity:   int64(h.Capacity) * SectorSize,
		tables:     map[uint32][]uint32{},
		budget:     budget,
		cowdGD:     int64(h.GDOffset),
	}
	if err := e.loadGD(int64(h.GDOffset), uint64(h.NumGDEntries)); err != nil {
		return nil, err
	}
	return e, nil
}

// loadGD reads the grain directory and checks that every table it points
// at lies inside the file.
func (e *sparseExtent) loadGD(sector int64, entries uint64) (err error) {
	e.gd, err = e.readGD(sector, entries, "grain directory")
	return err
}

func (e *sparseExtent) readGD(sector int64, entries uint64, what string) ([]uint32, error) {
	gdBytes := int64(entries) * 4
	if end := sector*SectorSize + gdBytes; sector > maxDiskSectors || end > e.src.size {
		return nil, fmt.Errorf("%s: %w: File truncated, expecting at least %d bytes for the %s", e.src.name, ErrCorrupt, end, what)
	}
	if err := e.budget.take(e.src.name, what, gdBytes); err != nil {
		return nil, err
	}
	// Read in pieces: the directory is held once, not also as bytes.
	gd := make([]uint32, entries)
	raw := make([]byte, min(gdBytes, 64<<10))
	for i := 0; i < len(gd); {
		piece := raw[:min(len(raw), (len(gd)-i)*4)]
		if err := e.src.readFull(piece, sector*SectorSize+int64(i)*4, what); err != nil {
			return nil, err
		}
		i += decodeEntriesInto(gd[i:], piece)
	}
	gtBytes := e.gtEntries * 4
	for i, v := range gd {
		if v != 0 && int64(v)*SectorSize+gtBytes > e.src.size {
			return nil, fmt.Errorf("%s: %w: %s entry %d points at sector %d, past the end of the file", e.src.name, ErrCorrupt, what, i, v)
		}
	}
	return gd, nil
}

// readTable reads the grain table at sector.
func (e *sparseExtent) readTable(sector int64) ([]uint32, error) {
	raw := make([]byte, e.gtEntries*4)
	if err := e.src.readFull(raw, sector*SectorSize, "grain table"); err != nil {
		return nil, err
	}
	return decodeEntries(raw), nil
}

// Grain directories and grain tables are arrays of little-endian u32
// sector numbers; decodeEntries and appendEntries are their one codec.

// decodeEntries decodes raw, 4 bytes an entry.
func decodeEntries(raw []byte) []uint32 {
	v := make([]uint32, len(raw)/4)
	decodeEntriesInto(v, raw)
	return v
}

// decodeEntriesInto decodes raw into dst and returns the entries decoded.
func decodeEntriesInto(dst []uint32, raw []byte) int {
	n := min(len(dst), len(raw)/4)
	for i := range n {
		dst[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	return n
}

// appendEntries appends the encoding of v to dst.
func appendEntries(dst []byte, v []uint32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, x)
	}
	return dst
}

// checkGrain rejects an uncompressed grain that lies past the end of the file
// before anything is read from it.
func (e *sparseExtent) checkGrain(g int64, gte uint32) error {
	need := min(e.grainBytes, e.capacity-g*e.grainBytes)
	if int64(gte)*SectorSize+need > e.src.end() {
		return fmt.Errorf("%s: %w: grain %d at sector %d lies past the end of the file", e.src.name, ErrCorrupt, g, gte)
	}
	return nil
}

func (e *sparseExtent) read(p []byte, off int64, r run) error {
	switch r.kind {
	case runData:
		return e.src.readFull(p, r.host, "grain data")
	case runCompressed:
		return e.readCompressed(p, off)
	}
	return fmt.Errorf("vmdk: internal error: read of run kind %d", r.kind)
}
