package vmdk

import (
	"fmt"
	"slices"
	"sort"
)

// grainGuard is what a write through an existing grain table entry is
// checked against, so a hostile entry cannot turn a guest write into an
// overwrite of the header, the descriptor, a grain directory, a grain
// table or another grain. It holds the metadata's sectors and the sector
// of every data entry when it was built; grains allocated since lie past
// all of them, at the end of the file.
type grainGuard struct {
	meta    []span   // sorted by start
	metaEnd []int64  // metaEnd[k]: the largest end of meta[:k+1]
	grains  []uint32 // sorted sectors of the data entries
	first   int64    // the first sector a grain may use (the header's overHead)
}

// buildGuard reads every grain table once (the dirty ones from memory):
// its cost is the tables' size, paid only by writes into existing grains.
func (e *sparseExtent) buildGuard() (*grainGuard, error) {
	g := &grainGuard{meta: e.metadataSpans()}
	if e.header != nil {
		g.first = int64(e.header.OverHead)
	}
	gtSectors := (e.gtEntries*4 + SectorSize - 1) / SectorSize
	for i, sector := range e.gd {
		if sector == 0 {
			continue
		}
		g.meta = append(g.meta, span{int64(sector), int64(sector) + gtSectors, fmt.Sprintf("grain table %d", i)})
		if e.rgd != nil && e.rgd[i] != 0 {
			g.meta = append(g.meta, span{int64(e.rgd[i]), int64(e.rgd[i]) + gtSectors, fmt.Sprintf("redundant grain table %d", i)})
		}
		e.mu.Lock()
		gt, dirty := e.tables[uint32(i)], e.dirty[uint32(i)]
		e.mu.Unlock()
		if !dirty {
			var err error
			if gt, err = e.readTable(int64(sector)); err != nil {
				return nil, fmt.Errorf("grain table %d: %w", i, err)
			}
		}
		e.mu.Lock()
		for _, v := range gt {
			if e.kindOf(v) == runData {
				g.grains = append(g.grains, v)
			}
		}
		e.mu.Unlock()
	}
	sort.Slice(g.meta, func(a, b int) bool { return g.meta[a].start < g.meta[b].start })
	g.metaEnd = make([]int64, len(g.meta))
	for k, m := range g.meta {
		g.metaEnd[k] = m.end
		if k > 0 {
			g.metaEnd[k] = max(m.end, g.metaEnd[k-1])
		}
	}
	slices.Sort(g.grains)
	return g, nil
}

// checkThrough refuses, with ErrCorrupt, to write grain g through its
// entry gte unless the grain lies inside the file, after the metadata,
// over no metadata and shares no sector with another entry's grain.
func (e *sparseExtent) checkThrough(g int64, gte uint32) error {
	if err := e.checkGrain(g, gte); err != nil {
		return err
	}
	if e.guard == nil {
		guard, err := e.buildGuard()
		if err != nil {
			return err
		}
		e.guard = guard
	}
	gd := e.guard
	sectors := e.grainBytes / SectorSize
	start, end := int64(gte), int64(gte)+sectors
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w: grain %d at sector %d "+format+"; refusing to write through it", append([]any{e.src.name, ErrCorrupt, g, gte}, a...)...)
	}
	// meta[:k] start before the grain ends; the first of them whose end
	// passes its start (where the running largest end does) overlaps it.
	if k := sort.Search(len(gd.meta), func(k int) bool { return gd.meta[k].start >= end }); k > 0 && gd.metaEnd[k-1] > start {
		first := sort.Search(k, func(j int) bool { return gd.metaEnd[j] > start })
		return bad("overlaps the %s", gd.meta[first].what)
	}
	if start < gd.first {
		return bad("lies before the first grain (sector %d), in the metadata's padding", gd.first)
	}
	// Grains whose sectors meet [start, end): this entry's own, and no other.
	lo := sort.Search(len(gd.grains), func(k int) bool { return int64(gd.grains[k]) > start-sectors })
	hi := sort.Search(len(gd.grains), func(k int) bool { return int64(gd.grains[k]) >= end })
	if hi-lo > 1 {
		return bad("shares sectors with another grain table entry's grain")
	}
	return nil
}

// usedEnd is the byte past everything the extent had in its file when the
// guard was built: header, descriptor, directories, tables, padding and
// grains (grains allocated since lie further on).
func (e *sparseExtent) usedEnd() (int64, error) {
	if e.guard == nil {
		guard, err := e.buildGuard()
		if err != nil {
			return 0, err
		}
		e.guard = guard
	}
	g := e.guard
	end := g.first
	if len(g.metaEnd) > 0 {
		end = max(end, g.metaEnd[len(g.metaEnd)-1])
	}
	if len(g.grains) > 0 {
		end = max(end, int64(g.grains[len(g.grains)-1])+e.grainBytes/SectorSize)
	}
	return end * SectorSize, nil
}
