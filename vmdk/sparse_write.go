package vmdk

import (
	"fmt"
	"math"
)

// maxDirtyTables bounds the grain tables held changed in memory; past it a
// write flushes first, so memory stays bounded for any write size.
const maxDirtyTables = 1024

// write stores p at extent offset off. New grains are appended to the file
// and their grain table entries changed only in memory until flush, which
// makes the data durable before any table points at it: an interrupted
// writer leaves unreferenced grains (a leak check reports), never a table
// entry pointing at garbage. fill reads the content under a grain that is
// only partly written (the parent's, or zeros) at extent offset off.
func (e *sparseExtent) write(p []byte, off int64, fill func(p []byte, off int64) error) error {
	if e.compressed {
		return fmt.Errorf("%s: %w: writes to a compressed (streamOptimized) extent; convert it to another subformat first", e.src.name, ErrUnsupported)
	}
	if e.nextFree == 0 {
		e.nextFree = (e.src.end() + SectorSize - 1) / SectorSize
	}
	if e.dirty == nil {
		e.dirty = map[uint32]bool{}
	}
	for len(p) > 0 {
		g := off / e.grainBytes
		start := g * e.grainBytes
		n := min(int64(len(p)), start+e.grainBytes-off)
		part := p[:n]
		gte, err := e.gte(g)
		if err != nil {
			return err
		}
		switch kind := e.kindOf(gte); {
		case kind == runData:
			if err := e.checkThrough(g, gte); err != nil {
				return err
			}
			if err := e.pwrite(part, int64(gte)*SectorSize+off-start, "grain data"); err != nil {
				return err
			}
		case n == e.grainLen(g) && e.skipsZeros(kind, fill) && isZero(part):
			// A whole grain of zeros needs no data: a zeroed-grain entry, or
			// nothing at all for an unallocated grain with no parent.
			if e.zeroedGTE && gte != 1 {
				if err := e.setGTE(g, 1); err != nil {
					return err
				}
			}
		case n == e.grainBytes && e.grainLen(g) == e.grainBytes:
			// Whole new grains: this one and those after it go to the end
			// of the file in one write.
			k, err := e.appendGrains(g, p, fill)
			if err != nil {
				return err
			}
			n = k
		default:
			if err := e.allocate(g, part, off-start, kind == runZero, fill); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// checkWritable reports why a write to [off, off+n) of the extent would
// fail part-way: a compressed extent, a file opened from a reader, or a
// grain table the directory does not have.
func (e *sparseExtent) checkWritable(off, n int64) error {
	if e.compressed {
		return fmt.Errorf("%s: %w: writes to a compressed (streamOptimized) extent; convert it to another subformat first", e.src.name, ErrUnsupported)
	}
	if e.src.f == nil {
		return fmt.Errorf("%s: %w: write to an image opened from a reader", e.src.name, ErrUnsupported)
	}
	covers := e.gtEntries * e.grainBytes
	for i := off / covers; i <= (off+n-1)/covers; i++ {
		if i >= int64(len(e.gd)) || e.gd[i] == 0 {
			return fmt.Errorf("%s: %w: grain table %d is not allocated", e.src.name, ErrUnsupported, i)
		}
		if err := e.checkTableSpot(i); err != nil {
			return err
		}
	}
	for g := off / e.grainBytes; g*e.grainBytes < off+n; g++ {
		gte, err := e.gte(g)
		if err != nil {
			return err
		}
		if e.kindOf(gte) == runData {
			if err := e.checkThrough(g, gte); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipsZeros reports whether a whole grain of zeros written over a grain
// of this kind needs no data: the extent has zeroed-grain entries, or the
// grain is unallocated and no parent shows through it.
func (e *sparseExtent) skipsZeros(kind runKind, fill func([]byte, int64) error) bool {
	return e.zeroedGTE || (kind == runUnallocated && fill == nil)
}

// appendGrains writes whole grains from g on, taken from the start of p,
// at the end of the file with one pwrite instead of one per grain, and
// returns the bytes of p they took (at least grain g's). The run ends at
// p's last whole grain, at a grain already stored or partial (the disk's
// last), or at a grain of zeros that needs no data. As with allocate, the
// grain table entries change only in memory, after the data is written:
// flush syncs the data before it writes any table.
func (e *sparseExtent) appendGrains(g int64, p []byte, fill func([]byte, int64) error) (int64, error) {
	count := int64(1)
	for (count+1)*e.grainBytes <= int64(len(p)) {
		next := g + count
		if e.grainLen(next) != e.grainBytes {
			break
		}
		gte, err := e.gte(next)
		if err != nil {
			return 0, err
		}
		kind := e.kindOf(gte)
		if kind != runUnallocated && kind != runZero {
			break
		}
		at := count * e.grainBytes
		if e.skipsZeros(kind, fill) && isZero(p[at:at+e.grainBytes]) {
			break
		}
		count++
	}
	sector, sectors := e.nextFree, e.grainBytes/SectorSize
	if sector+count*sectors > math.MaxUint32 {
		return 0, fmt.Errorf("%s: %w: the extent would pass 2^32 sectors, the most a grain table entry can address", e.src.name, ErrUnsupported)
	}
	n := count * e.grainBytes
	if err := e.pwrite(p[:n], sector*SectorSize, "new grains"); err != nil {
		return 0, err
	}
	e.nextFree += count * sectors
	e.src.grown.Store(max(e.src.end(), e.nextFree*SectorSize))
	for i := range count {
		if err := e.setGTE(g+i, uint32(sector+i*sectors)); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// allocate appends a new grain holding part at offset within, the rest of
// the grain copied from fill (or zeros for a zeroed grain or without fill).
func (e *sparseExtent) allocate(g int64, part []byte, within int64, zeroed bool, fill func([]byte, int64) error) error {
	start := g * e.grainBytes
	grain := make([]byte, e.grainBytes)
	if int64(len(part)) < e.grainLen(g) && !zeroed && fill != nil {
		if err := fill(grain[:e.grainLen(g)], start); err != nil {
			return fmt.Errorf("copy-on-write of grain %d: %w", g, err)
		}
	}
	copy(grain[within:], part)
	sector := e.nextFree
	if sector+e.grainBytes/SectorSize > math.MaxUint32 {
		return fmt.Errorf("%s: %w: the extent would pass 2^32 sectors, the most a grain table entry can address", e.src.name, ErrUnsupported)
	}
	if err := e.pwrite(grain, sector*SectorSize, "new grain"); err != nil {
		return err
	}
	e.nextFree += e.grainBytes / SectorSize
	e.src.grown.Store(max(e.src.end(), e.nextFree*SectorSize))
	return e.setGTE(g, uint32(sector))
}

// setGTE changes grain g's entry in memory and marks its table dirty.
func (e *sparseExtent) setGTE(g int64, v uint32) error {
	i := uint32(g / e.gtEntries)
	if int(i) >= len(e.gd) || e.gd[i] == 0 {
		return fmt.Errorf("%s: %w: grain table %d is not allocated", e.src.name, ErrUnsupported, i)
	}
	if len(e.dirty) >= maxDirtyTables && !e.dirty[i] {
		if err := e.flush(true); err != nil {
			return err
		}
	}
	gt, err := e.grainTable(i)
	if err != nil {
		return err
	}
	e.mu.Lock()
	gt[g%e.gtEntries] = v
	e.dirty[i] = true
	e.tables[i] = gt // keep it cached even if evicted meanwhile
	e.mu.Unlock()
	return nil
}

func (e *sparseExtent) pwrite(p []byte, off int64, what string) error {
	if e.src.f == nil {
		return fmt.Errorf("%s: %w: write to an image opened from a reader", e.src.name, ErrUnsupported)
	}
	e.unsynced = true
	if _, err := e.src.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("%s: write %s at byte %d: %w", e.src.name, what, off, err)
	}
	return nil
}

// sync makes everything written to the extent file durable.
func (e *sparseExtent) sync(what string) error {
	if err := e.src.f.Sync(); err != nil {
		return fmt.Errorf("%s: sync %s: %w", e.src.name, what, err)
	}
	e.unsynced = false
	return nil
}

// flush makes written grains durable, then writes the changed grain tables
// and makes them durable, then their redundant copies: a power cut between
// the two leaves the redundant copy behind the primary, never ahead of it
// (Check tells the one from corruption). Without durable (Close) the same
// order is kept, as the OS may write the tables back before the grains
// otherwise, leaving entries over unwritten data after a power cut; only
// the final sync is left out.
func (e *sparseExtent) flush(durable bool) error {
	if len(e.dirty) == 0 {
		if durable && e.unsynced {
			return e.sync("grains") // overwritten in place: no table changed
		}
		return nil
	}
	if e.unsynced {
		if err := e.sync("grains"); err != nil {
			return err
		}
	}
	if err := e.writeTables(e.gd, "grain table"); err != nil {
		return err
	}
	if e.rgd != nil {
		if err := e.sync("grain tables"); err != nil {
			return err
		}
		if err := e.writeTables(e.rgd, "redundant grain table"); err != nil {
			return err
		}
	}
	if durable {
		if err := e.sync("grain tables"); err != nil {
			return err
		}
	}
	e.mu.Lock()
	clear(e.dirty)
	e.mu.Unlock()
	return nil
}

// writeDirtyTables writes the changed grain tables and their redundant
// copies, with no sync before, between or after (Disk.CloseUnsynced).
func (e *sparseExtent) writeDirtyTables() error {
	if len(e.dirty) == 0 {
		return nil
	}
	if err := e.writeTables(e.gd, "grain table"); err != nil {
		return err
	}
	if e.rgd != nil {
		if err := e.writeTables(e.rgd, "redundant grain table"); err != nil {
			return err
		}
	}
	e.mu.Lock()
	clear(e.dirty)
	e.mu.Unlock()
	return nil
}

// writeTables writes the dirty grain tables where directory gd places them.
func (e *sparseExtent) writeTables(gd []uint32, what string) error {
	raw := make([]byte, 0, e.gtEntries*4)
	for i := range e.dirty {
		if gd[i] == 0 {
			continue
		}
		e.mu.Lock()
		raw = appendEntries(raw[:0], e.tables[i])
		e.mu.Unlock()
		if err := e.pwrite(raw, int64(gd[i])*SectorSize, fmt.Sprintf("%s %d", what, i)); err != nil {
			return err
		}
	}
	return nil
}

// writeTable writes gt at sector and makes it durable (Check's repair).
func (e *sparseExtent) writeTable(sector int64, gt []uint32) error {
	if err := e.pwrite(appendEntries(nil, gt), sector*SectorSize, "grain table"); err != nil {
		return err
	}
	return e.sync("grain table")
}
