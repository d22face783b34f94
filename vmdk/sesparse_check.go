package vmdk

import (
	"context"
	"fmt"
)

// check runs Check's steps on a seSparse extent: every grain directory
// entry names its own grain table (two sharing one alias every grain), and
// every grain table entry of the capacity has a known type, an
// unallocated entry no stray bits, an allocated one a grain index inside
// the grains area and the file that no other entry points at. (The GD
// entries' form and table numbers were checked by Open, which refuses the
// extent otherwise.) There are no leaks to report and nothing to repair:
// ESXi's free bitmap, not the end of the file, says what is free.
func (e *seSparseExtent) check(ctx context.Context, r *CheckReport) error {
	owner := map[int64]int64{} // table number -> the GD entry naming it first
	// Grain indexes Open's bounds let through: inside the area and the
	// file (the last one perhaps only in part).
	slots := ((e.src.end()+SectorSize-1)/SectorSize - e.h.grains.offset + seGrainSectors - 1) / seGrainSectors
	used := make([]uint64, (max(0, min(slots, e.grainSlots))+63)/64)
	for i, v := range e.gd {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, err := e.tableOf(int64(i), v)
		if err != nil {
			r.corruptEntry(aboutTables, "%v", err)
			continue
		}
		if t < 0 {
			continue
		}
		if first, ok := owner[t]; ok {
			r.corruptEntry(aboutTables, "%s: seSparse grain directory entries %d and %d both name grain table %d: their grains alias each other", e.src.name, first, i, t)
			continue
		}
		owner[t] = int64(i)
		gt, err := e.table(int64(i))
		if err != nil {
			r.corruptEntry(aboutTables, "%v", err)
			continue
		}
		for j, v := range gt {
			g := int64(i)*seGTEntries + int64(j)
			if g*seGrainBytes >= e.capacity {
				break
			}
			k, host, err := e.grainEntry(g, v)
			if err != nil {
				r.corruptEntry(aboutGrains, "%v", err)
				continue
			}
			if k != runData {
				continue
			}
			r.Grains++
			index := (host/SectorSize - e.h.grains.offset) / seGrainSectors
			if used[index/64]&(1<<(index%64)) != 0 {
				r.corruptEntry(aboutGrains, "%s: seSparse grain %d is stored at grain index %d, which another grain table entry already points at", e.src.name, g, index)
				continue
			}
			used[index/64] |= 1 << (index % 64)
		}
	}
	return nil
}

// checkLine reports an extent line that does not place the whole extent
// (Open refuses a line larger than the capacity; a smaller one hides the
// rest of the extent, as checkLine reports for hosted sparse extents).
func (e *seSparseExtent) checkLine(r *CheckReport, pe placedExtent) {
	if hidden, err := fitSparseLine(e.src.name, pe.size, e.capacity); err != nil {
		r.corrupt("%v", err)
	} else if hidden > 0 {
		r.corrupt("%s: the extent line places %d sectors but the seSparse header's capacity is %d", e.src.name, pe.size/SectorSize, e.capacity/SectorSize)
	}
}

// refuseSESparseRepair refuses Check's repair of a disk with seSparse
// extents, before anything is written.
func refuseSESparseRepair(d *Disk) error {
	for _, pe := range d.extents {
		if se, ok := pe.ext.(*seSparseExtent); ok {
			return fmt.Errorf("%s: %w: seSparse extents are read-only here (as in QEMU): Check can report on them but not repair them; run it without repair, and repair the snapshot in ESXi (consolidate it)", se.src.name, ErrUnsupported)
		}
	}
	return nil
}
