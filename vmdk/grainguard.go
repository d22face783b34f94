package vmdk

import (
	"fmt"
	"slices"
	"sort"
)

// grainGuard is what a write is checked against before it goes through a
// grain table entry or dirties a grain table, so a hostile entry or
// directory cannot turn a guest write into an overwrite of the header,
// the descriptor, a grain directory, a grain table or another grain.
type grainGuard struct {
	meta         []span   // header, descriptor, grain directories
	tables       []uint32 // sorted sectors of the grain tables and their copies
	tableSectors int64
	first        int64 // the first sector a grain may use (the header's overHead)
	// grains are the sorted sectors of every data entry, read from all the
	// tables on the first need (grains allocated since lie past them all,
	// at the end of the file); nil until then.
	grains []uint32
	spots  map[uint32]bool // grain tables whose places were checked
}

// writeGuard returns the extent's guard, built from the header and the
// directories (no I/O) on first use.
func (e *sparseExtent) writeGuard() *grainGuard {
	if e.guard != nil {
		return e.guard
	}
	g := &grainGuard{meta: e.metadataSpans(), tableSectors: (e.gtEntries*4 + SectorSize - 1) / SectorSize, spots: map[uint32]bool{}}
	if e.header != nil {
		g.first = int64(e.header.OverHead)
	}
	for i, sector := range e.gd {
		if sector != 0 {
			g.tables = append(g.tables, sector)
		}
		if e.rgd != nil && e.rgd[i] != 0 {
			g.tables = append(g.tables, e.rgd[i])
		}
	}
	slices.Sort(g.tables)
	e.guard = g
	return g
}

// scanGrains reads every grain table once (the dirty ones from memory):
// its cost is the tables' size, paid by the first write that needs it.
// Directory entries sharing a table make the extent corrupt for writing
// (a write through one entry would change the others' content too), and
// are refused before their tables are read: a hostile directory naming
// one full table a million times would otherwise hold 4 bytes for each of
// its entries' grains. Tables in holes of the file are all zeros unread.
func (e *sparseExtent) scanGrains(g *grainGuard) error {
	if g.grains != nil {
		return nil
	}
	order := orderTables(e.gd, runOfTable, g.tableSectors)
	grains := []uint32{}
	var hole holeWindow
	for i, sector := range e.gd {
		if sector == 0 {
			continue
		}
		if order.shared(i) {
			return fmt.Errorf("%s: %w: grain directory entry %d names the grain table of a lower entry (sector %d); refusing to write through shared tables", e.src.name, ErrCorrupt, i, sector)
		}
		e.mu.Lock()
		gt, dirty := e.tables[uint32(i)], e.dirty[uint32(i)]
		e.mu.Unlock()
		if !dirty {
			if e.sectorsInHole(int64(sector), &hole) {
				continue
			}
			var err error
			if gt, err = e.readTable(int64(sector)); err != nil {
				return fmt.Errorf("grain table %d: %w", i, err)
			}
		}
		e.mu.Lock()
		for _, v := range gt {
			if e.kindOf(v) == runData {
				grains = append(grains, v)
			}
		}
		e.mu.Unlock()
	}
	slices.Sort(grains)
	g.grains = grains
	return nil
}

// meeting counts the sorted starts of spans of length n that meet
// [start, end).
func meeting(starts []uint32, n, start, end int64) int {
	lo := sort.Search(len(starts), func(k int) bool { return int64(starts[k]) > start-n })
	hi := sort.Search(len(starts), func(k int) bool { return int64(starts[k]) >= end })
	return max(0, hi-lo)
}

// metaAt names the header, descriptor or grain directory that meets
// [start, end), or "".
func (g *grainGuard) metaAt(start, end int64) string {
	for _, m := range g.meta {
		if m.start < end && start < m.end {
			return m.what
		}
	}
	return ""
}

// checkThrough refuses, with ErrCorrupt, to write grain g through its
// entry gte unless the grain lies inside the file, after the metadata,
// over no metadata and shares no sector with another entry's grain.
func (e *sparseExtent) checkThrough(g int64, gte uint32) error {
	if err := e.checkGrain(g, gte); err != nil {
		return err
	}
	gd := e.writeGuard()
	sectors := e.grainBytes / SectorSize
	start, end := int64(gte), int64(gte)+sectors
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w: grain %d at sector %d "+format+"; refusing to write through it", append([]any{e.src.name, ErrCorrupt, g, gte}, a...)...)
	}
	if what := gd.metaAt(start, end); what != "" {
		return bad("overlaps the %s", what)
	}
	if meeting(gd.tables, gd.tableSectors, start, end) > 0 {
		return bad("overlaps a grain table")
	}
	if start < gd.first {
		return bad("lies before the first grain (sector %d), in the metadata's padding", gd.first)
	}
	if err := e.scanGrains(gd); err != nil {
		return err
	}
	// Grains whose sectors meet [start, end): this entry's own, and no other.
	if meeting(gd.grains, sectors, start, end) > 1 {
		return bad("shares sectors with another grain table entry's grain")
	}
	return nil
}

// checkTableSpot refuses, with ErrCorrupt, to dirty grain table i (and so
// rewrite it and its redundant copy at the next flush) unless each lies
// over no header, descriptor, directory, other table or grain: a hostile
// directory entry would have the flush overwrite them.
func (e *sparseExtent) checkTableSpot(i int64) error {
	gd := e.writeGuard()
	if gd.spots[uint32(i)] {
		return nil
	}
	places := []uint32{e.gd[i]}
	if e.rgd != nil && e.rgd[i] != 0 {
		places = append(places, e.rgd[i])
	}
	for _, sector := range places {
		start, end := int64(sector), int64(sector)+gd.tableSectors
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%s: %w: grain table %d at sector %d "+format+"; refusing to write it", append([]any{e.src.name, ErrCorrupt, i, sector}, a...)...)
		}
		if what := gd.metaAt(start, end); what != "" {
			return bad("overlaps the %s", what)
		}
		if meeting(gd.tables, gd.tableSectors, start, end) > 1 {
			return bad("overlaps another grain table")
		}
		if gd.first > 0 && end <= gd.first {
			continue // before the first grain: no grain can be there
		}
		if err := e.scanGrains(gd); err != nil {
			return err
		}
		if meeting(gd.grains, e.grainBytes/SectorSize, start, end) > 0 {
			return bad("overlaps a grain")
		}
	}
	gd.spots[uint32(i)] = true
	return nil
}

// usedEnd is the byte past everything the extent had in its file when the
// guard was built: header, descriptor, directories, tables, padding and
// grains (grains allocated since lie further on).
func (e *sparseExtent) usedEnd() (int64, error) {
	g := e.writeGuard()
	if err := e.scanGrains(g); err != nil {
		return 0, err
	}
	end := g.first
	for _, m := range g.meta {
		end = max(end, m.end)
	}
	if len(g.tables) > 0 {
		end = max(end, int64(g.tables[len(g.tables)-1])+g.tableSectors)
	}
	if len(g.grains) > 0 {
		end = max(end, int64(g.grains[len(g.grains)-1])+e.grainBytes/SectorSize)
	}
	return end * SectorSize, nil
}
