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
	pinned bool                // tables built by scanning: never evicted
	rgd    []uint32            // redundant GD, when the header has one

	// cacheTables bounds len(tables) below gtCacheTables when set.
	cacheTables int
	// budget bounds the grain directories of one Open.
	budget *directoryBudget

	// Write state (guarded by the disk's write lock).
	dirty    map[uint32]bool // GTs changed in memory since the last flush
	nextFree int64           // sector where the next new grain goes
	guard    *grainGuard     // built on the first write through an entry
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

// grainTable returns GT i (nil when the GD has no table there).
func (e *sparseExtent) grainTable(i uint32) ([]uint32, error) {
	e.mu.Lock()
	gt, ok := e.tables[i]
	e.mu.Unlock()
	if ok || e.pinned || int(i) >= len(e.gd) || e.gd[i] == 0 {
		return gt, nil
	}
	gt, err := e.readTable(int64(e.gd[i]))
	if err != nil {
		return nil, fmt.Errorf("grain table %d: %w", i, err)
	}
	e.mu.Lock()
	if limit := e.cacheTables; len(e.tables) >= limit && limit > 0 || len(e.tables) >= gtCacheTables {
		for k := range e.tables { // evict a clean table: bounded memory
			if !e.dirty[k] {
				delete(e.tables, k)
				break
			}
		}
	}
	e.tables[i] = gt
	e.mu.Unlock()
	return gt, nil
}

// gte returns the grain table entry of grain g (0 when unallocated).
func (e *sparseExtent) gte(g int64) (uint32, error) {
	gt, err := e.grainTable(uint32(g / e.gtEntries))
	if err != nil || gt == nil {
		return 0, err
	}
	e.mu.Lock() // writers change entries in place
	v := gt[g%e.gtEntries]
	e.mu.Unlock()
	return v, nil
}

func (e *sparseExtent) kindOf(gte uint32) runKind {
	switch {
	case gte == 0:
		return runUnallocated
	case gte == 1 && e.zeroedGTE:
		return runZero
	case e.compressed:
		return runCompressed
	default:
		return runData
	}
}

func (e *sparseExtent) lookup(off, n int64) (run, error) {
	if off >= e.capacity {
		// Past what the tables cover (descriptor larger than the header's
		// capacity): nothing is allocated there.
		return run{kind: runUnallocated, n: n}, nil
	}
	n = min(n, e.capacity-off)
	g := off / e.grainBytes
	gte, err := e.gte(g)
	if err != nil {
		return run{}, err
	}
	r := run{kind: e.kindOf(gte), n: min(n, (g+1)*e.grainBytes-off)}
	if r.kind == runData {
		r.host = int64(gte)*SectorSize + off%e.grainBytes
		if err := e.checkGrain(g, gte); err != nil {
			return run{}, err
		}
	}
	// Extend over following grains of the same kind so sequential reads
	// become few large reads (uncompressed data must be contiguous).
	for next := int64(gte); r.n < n; {
		g++
		v, err := e.gte(g)
		if err != nil {
			return run{}, err
		}
		if e.kindOf(v) != r.kind {
			break
		}
		if r.kind == runData {
			if next += int64(e.grainBytes / SectorSize); int64(v) != next {
				break
			}
			if err := e.checkGrain(g, v); err != nil {
				return run{}, err
			}
		}
		r.n = min(n, r.n+e.grainBytes)
	}
	return r, nil
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
