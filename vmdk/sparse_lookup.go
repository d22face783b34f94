package vmdk

import (
	"bytes"
	"fmt"
	"os"
	"unsafe"
)

// Lookup in a sparse extent costs in proportion to what is allocated, not
// to the virtual size: a range without grain tables is one step however
// large, an allocated table is one scan of its entries, and GD entries
// that share a table share one cached copy of it.

// grainTable returns GT i (nil when the GD has no table there).
func (e *sparseExtent) grainTable(i uint32) ([]uint32, error) {
	e.mu.Lock()
	gt, ok := e.tables[i]
	if !ok && !e.pinned && int(i) < len(e.gd) && e.gd[i] != 0 {
		if k, ok := e.shared[e.gd[i]]; ok {
			gt = e.tables[k] // not cached again under i: no churn
		}
	}
	e.mu.Unlock()
	if gt != nil || e.pinned || int(i) >= len(e.gd) || e.gd[i] == 0 {
		return gt, nil
	}
	gt, err := e.readTable(int64(e.gd[i]))
	if err != nil {
		return nil, fmt.Errorf("grain table %d: %w", i, err)
	}
	e.mu.Lock()
	if cached, ok := e.tables[i]; ok { // another reader (or a writer) won
		gt = cached
	} else {
		e.cacheTable(i, gt)
	}
	e.mu.Unlock()
	return gt, nil
}

// cacheTable keeps gt as GT i, evicting a clean table when the cache is
// full so memory stays bounded. e.mu must be held.
func (e *sparseExtent) cacheTable(i uint32, gt []uint32) {
	if limit := e.cacheTables; len(e.tables) >= limit && limit > 0 || len(e.tables) >= gtCacheTables {
		for k := range e.tables {
			if !e.dirty[k] {
				delete(e.tables, k)
				if int(k) < len(e.gd) && e.shared[e.gd[k]] == k {
					delete(e.shared, e.gd[k])
				}
				break
			}
		}
	}
	e.tables[i] = gt
	if int(i) < len(e.gd) {
		if e.shared == nil {
			e.shared = map[uint32]uint32{}
		}
		e.shared[e.gd[i]] = i
	}
}

// tableAbsent says GT i does not exist: no GD entry, or (for a stream
// indexed by its markers) no grain in it.
func (e *sparseExtent) tableAbsent(i int64) bool {
	if e.pinned {
		e.mu.Lock()
		_, ok := e.tables[uint32(i)]
		e.mu.Unlock()
		return !ok
	}
	return i >= int64(len(e.gd)) || e.gd[i] == 0
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

// lookup returns the longest run of one kind from off, across grain
// tables: absent tables, tables that lie in a hole of the file and
// all-zero stretches of a table are skipped in one step each, and
// uncompressed data extends while its grains are contiguous in the file so
// sequential reads become few large reads.
func (e *sparseExtent) lookup(off, n int64) (run, error) {
	if off >= e.capacity {
		// Past what the tables cover (descriptor larger than the header's
		// capacity): nothing is allocated there.
		return run{kind: runUnallocated, n: n}, nil
	}
	w := walk{end: off + min(n, e.capacity-off), pos: off, r: run{kind: runUnallocated}}
	span := e.gtEntries * e.grainBytes // bytes one table covers
	var hole holeWindow
	for w.pos < w.end && !w.stop {
		ti := w.pos / span
		if e.tableAbsent(ti) || e.tableInHole(ti, &hole) {
			w.unallocated((ti + 1) * span)
			continue
		}
		gt, err := e.grainTable(uint32(ti))
		if err != nil {
			return run{}, err
		}
		if err := e.scanTable(gt, ti, &w); err != nil {
			return run{}, err
		}
	}
	w.r.n = min(w.pos, w.end) - off
	return w.r, nil
}

// walk is the state of one lookup: the run so far, which ends at pos.
type walk struct {
	pos, end int64
	r        run
	started  bool
	stop     bool  // the run ended at pos
	next     int64 // sector the next data grain must start at to extend r
}

// unallocated extends the run over unallocated bytes up to to, or ends it.
func (w *walk) unallocated(to int64) {
	if w.started && w.r.kind != runUnallocated {
		w.stop = true
		return
	}
	w.started = true
	w.pos = to
}

// scanTable extends the walk over the entries of GT ti, up to w.end or the
// table's end.
func (e *sparseExtent) scanTable(gt []uint32, ti int64, w *walk) error {
	grainSectors := e.grainBytes / SectorSize
	tableEnd := (ti + 1) * e.gtEntries * e.grainBytes
	e.mu.Lock() // writers change entries in place
	defer e.mu.Unlock()
	for w.pos < w.end && w.pos < tableEnd && !w.stop {
		g := w.pos / e.grainBytes
		j := g % e.gtEntries
		v := gt[j]
		if v == 0 && (!w.started || w.r.kind == runUnallocated) {
			// Skip the table's run of zero entries at memory speed: a GD
			// sharing one empty table must cost little per entry.
			k := j + int64(zeroPrefix(gt[j:]))
			w.unallocated(tableEnd - (e.gtEntries-k)*e.grainBytes)
			continue
		}
		k := e.kindOf(v)
		switch {
		case !w.started:
			w.r.kind, w.started = k, true
			if k == runData {
				w.r.host = int64(v)*SectorSize + w.pos%e.grainBytes
			}
		case k != w.r.kind, k == runData && int64(v) != w.next:
			w.stop = true
			return nil
		}
		if k == runData {
			if err := e.checkGrain(g, v); err != nil {
				return err
			}
			w.next = int64(v) + grainSectors
		}
		w.pos = (g + 1) * e.grainBytes
	}
	return nil
}

// zeroPrefix returns how many entries at the start of v are 0: a whole
// empty table is one memory compare, so a GD whose entries all share one
// empty table costs little per entry.
func zeroPrefix(v []uint32) int {
	if len(v) > 0 && len(v) <= len(zeroTable) {
		b := unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
		if bytes.Equal(b, zeroTable[:len(b)]) {
			return len(v)
		}
	}
	k := 0
	for k < len(v) && v[k] == 0 {
		k++
	}
	return k
}

// zeroTable is the bytes of the largest grain table (COWD's) all zero.
var zeroTable [cowdGTEsPerGT * 4]byte

// holeWindow is a byte range of the extent file known to be a hole, [from,
// to), learned during one lookup (never kept longer: writes fill holes).
type holeWindow struct{ from, to int64 }

// tableInHole says GT ti is not cached and lies wholly in a hole of the
// file, so all its entries are zero, without reading it.
func (e *sparseExtent) tableInHole(ti int64, w *holeWindow) bool {
	if e.pinned {
		return false
	}
	e.mu.Lock()
	_, cached := e.tables[uint32(ti)] // may hold entries not yet on disk
	if !cached {
		_, cached = e.shared[e.gd[ti]]
	}
	e.mu.Unlock()
	return !cached && e.sectorsInHole(int64(e.gd[ti]), w)
}

// sectorsInHole says the grain table at sector lies wholly in a hole of
// the file (whatever a cache holds: the caller knows it holds nothing
// newer), extending w with what it learns.
func (e *sparseExtent) sectorsInHole(sector int64, w *holeWindow) bool {
	f, ok := e.src.f.(*os.File) // only a real file can say where its holes are
	if e.pinned || !ok {
		return false
	}
	start := sector * SectorSize
	end := start + e.gtEntries*4
	if start >= w.from && end <= w.to {
		return true
	}
	d, ok := NextData(f, start)
	if !ok {
		return false
	}
	*w = holeWindow{from: start, to: d}
	return end <= d
}
