package vmdk

import (
	"cmp"
	"fmt"
	"slices"
)

// Check's overlap and leak analysis works on runs of sectors, not on one
// labelled span per grain table or grain: a directory whose tables lie one
// after another (as qemu-img lays out even a 64 TiB image's) is one run,
// as is a directory whose entries all name one table, and grains written
// in order are one run however many there are. Memory then follows what
// the image's metadata says in distinct pieces, not its virtual size, and
// the labels of a report are built only for what is reported.

// runOf says what a sectorRun holds.
type runOf uint8

const (
	runOfMeta   runOf = iota // metadataSpans()[first]: header, descriptor, a directory
	runOfTable               // grain tables first.. (GD indexes)
	runOfRTable              // redundant grain tables first..
	runOfGrain               // grains first.. (grain numbers)
)

// sectorRun is n items of one kind, numbered first.., lying one after
// another from sector start to end or, when same is set, all at
// [start, end) (GD entries sharing one table: first, second and n-2
// more).
type sectorRun struct {
	start, end int64
	first, n   int64
	second     int64
	of         runOf
	same       bool
}

// runList builds the runs of one kind, merging each item into the last run
// when it continues it.
type runList struct {
	runs  []sectorRun
	merge bool // items may merge (not compressed grains, whose lengths vary)
}

func (l *runList) add(r sectorRun) {
	if k := len(l.runs) - 1; l.merge && k >= 0 {
		last := &l.runs[k]
		// Grains at one place are not merged: each pair sharing sectors
		// is reported.
		if last.of == r.of && r.first == last.first+last.n && r.n == 1 && r.start == last.end && r.end-r.start == (last.end-last.start)/last.n {
			last.end, last.n = r.end, last.n+1
			return
		}
	}
	l.runs = append(l.runs, r)
}

// at is the number of run r's item lying at sector s, and that item's
// first sector.
func (r sectorRun) at(s int64) (item, start int64) {
	if r.same || r.n <= 1 {
		return r.first, r.start
	}
	unit := (r.end - r.start) / r.n
	k := min(max(s-r.start, 0)/unit, r.n-1)
	return r.first + k, r.start + k*unit
}

// what names run r's item at sector s as Check's reports name it.
func (e *sparseExtent) what(r sectorRun, s int64, meta []span) string {
	item, start := r.at(s)
	switch r.of {
	case runOfMeta:
		return meta[r.first].what
	case runOfTable:
		return fmt.Sprintf("grain table %d", item)
	case runOfRTable:
		return fmt.Sprintf("redundant grain table %d", item)
	}
	return fmt.Sprintf("grain %d (sector %d)", item, start)
}

// checkOverlaps reports grains sharing sectors with each other or with
// metadata, and metadata with metadata (meta and the tables of dirs), and
// returns the end of the metadata. It sorts grains.
func (e *sparseExtent) checkOverlaps(r *CheckReport, grains []sectorRun, meta []span, dirs ...*tableOrder) (metaEnd int64) {
	name := e.src.name
	slices.SortFunc(grains, func(a, b sectorRun) int { return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.first, b.first)) })
	for k := 1; k < len(grains); k++ {
		if g, p := grains[k], grains[k-1]; g.start < p.end {
			r.corruptEntry(aboutGrains, "%s: %s and %s share sectors %d..%d", name, e.what(p, g.start, meta), e.what(g, g.start, meta), g.start, min(g.end, p.end)-1)
		}
	}
	// Metadata sharing sectors (a directory entry placing a grain table
	// over the descriptor, a directory or another table): a write of one
	// overwrites the other, so writes refuse such a table (checkTableSpot).
	// The header, descriptor and directories, then each directory's
	// tables, are merged in sector order.
	metaRuns := make([]sectorRun, 0, len(meta))
	for k, m := range meta {
		metaRuns = append(metaRuns, sectorRun{start: m.start, end: m.end, first: int64(k), n: 1, of: runOfMeta})
	}
	slices.SortFunc(metaRuns, func(a, b sectorRun) int { return cmp.Compare(a.start, b.start) })
	next := func(d int) (sectorRun, bool) { // 0: metaRuns, first at a tie
		if d == 0 {
			if len(metaRuns) == 0 {
				return sectorRun{}, false
			}
			m := metaRuns[0]
			metaRuns = metaRuns[1:]
			return m, true
		}
		return dirs[d-1].nextRun()
	}
	heads := make([]sectorRun, len(dirs)+1)
	live := make([]bool, len(dirs)+1)
	for d := range heads {
		heads[d], live[d] = next(d)
	}
	var far sectorRun // of those so far, the one reaching furthest
	for k := 0; ; k++ {
		d := -1
		for c := range heads {
			if live[c] && (d < 0 || heads[c].start < heads[d].start) {
				d = c
			}
		}
		if d < 0 {
			return metaEnd
		}
		m := heads[d]
		heads[d], live[d] = next(d)
		if m.same {
			// GD entries naming one table: reported once, with a count.
			r.corruptEntry(aboutTables, "%s: the %s and the %s share sectors %d..%d%s", name, e.what(m, m.start, meta),
				e.what(sectorRun{start: m.start, end: m.end, first: m.second, n: 1, of: m.of}, m.start, meta),
				m.start, m.end-1, more(m.n-2, "grain tables lie there too"))
		}
		if k > 0 && m.start < far.end {
			r.corruptEntry(aboutTables, "%s: the %s and the %s share sectors %d..%d", name, e.what(far, m.start, meta), e.what(m, m.start, meta), m.start, min(m.end, far.end)-1)
		}
		if k == 0 || m.end > far.end {
			far = m
		}
		metaEnd = max(metaEnd, m.end)
		g, _ := slices.BinarySearchFunc(grains, m.start, func(g sectorRun, s int64) int {
			if g.end > s {
				return 1
			}
			return -1
		})
		if g < len(grains) && grains[g].start < m.end {
			at := max(grains[g].start, m.start)
			r.corruptEntry(aboutGrains, "%s: %s overlaps the %s", name, e.what(grains[g], at, meta), e.what(m, at, meta))
		}
	}
}

// more is ", and n <what>" when n > 0.
func more(n int64, what string) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%d more %s)", n, what)
}
