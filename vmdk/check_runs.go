package vmdk

import (
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
// [start, end) (GD entries sharing one table).
type sectorRun struct {
	start, end int64
	first, n   int64
	of         runOf
	same       bool
}

// runList builds the runs of one kind, merging each item into the last run
// when it continues it.
type runList struct {
	runs  []sectorRun
	merge bool // items may merge (not compressed grains, whose lengths vary)
	same  bool // items at one place may merge (tables: grains sharing sectors are reported one by one)
}

func (l *runList) add(r sectorRun) {
	if k := len(l.runs) - 1; l.merge && k >= 0 {
		last := &l.runs[k]
		if last.of == r.of && r.first == last.first+last.n && r.n == 1 {
			switch {
			case l.same && r.start == last.start && r.end == last.end && (last.n == 1 || last.same):
				last.same, last.n = true, last.n+1
				return
			case !last.same && r.start == last.end && r.end-r.start == (last.end-last.start)/last.n:
				last.end, last.n = r.end, last.n+1
				return
			}
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
// metadata, and metadata with metadata, and returns the end of the
// metadata. It sorts grains.
func (e *sparseExtent) checkOverlaps(r *CheckReport, grains, tables []sectorRun, meta []span) (metaEnd int64) {
	name := e.src.name
	byStart := func(a, b sectorRun) int {
		if a.start != b.start {
			return int(min(max(a.start-b.start, -1), 1))
		}
		return int(min(max(a.first-b.first, -1), 1))
	}
	slices.SortFunc(grains, byStart)
	for k := 1; k < len(grains); k++ {
		if g, p := grains[k], grains[k-1]; g.start < p.end {
			r.corrupt("%s: %s and %s share sectors %d..%d", name, e.what(p, g.start, meta), e.what(g, g.start, meta), g.start, min(g.end, p.end)-1)
		}
	}
	// Metadata sharing sectors (a directory entry placing a grain table
	// over the descriptor, a directory or another table): a write of one
	// overwrites the other, so writes refuse such a table (checkTableSpot).
	all := make([]sectorRun, 0, len(meta)+len(tables))
	for k, m := range meta {
		all = append(all, sectorRun{start: m.start, end: m.end, first: int64(k), n: 1, of: runOfMeta})
	}
	all = append(all, tables...)
	slices.SortFunc(all, byStart)
	var far sectorRun // of those so far, the one reaching furthest
	for k, m := range all {
		if m.same {
			// GD entries naming one table: reported once, with a count.
			r.corrupt("%s: the %s and the %s share sectors %d..%d%s", name, e.what(m, m.start, meta),
				e.what(sectorRun{start: m.start, end: m.end, first: m.first + 1, n: 1, of: m.of}, m.start, meta),
				m.start, m.end-1, more(m.n-2, "grain tables lie there too"))
		}
		if k > 0 && m.start < far.end {
			r.corrupt("%s: the %s and the %s share sectors %d..%d", name, e.what(far, m.start, meta), e.what(m, m.start, meta), m.start, min(m.end, far.end)-1)
		}
		if k == 0 || m.end > far.end {
			far = m
		}
	}
	for _, m := range all {
		metaEnd = max(metaEnd, m.end)
		k, _ := slices.BinarySearchFunc(grains, m.start, func(g sectorRun, s int64) int {
			if g.end > s {
				return 1
			}
			return -1
		})
		if k < len(grains) && grains[k].start < m.end {
			g := grains[k]
			r.corrupt("%s: %s overlaps the %s", name, e.what(g, max(g.start, m.start), meta), e.what(m, max(g.start, m.start), meta))
		}
	}
	return metaEnd
}

// more is ", and n <what>" when n > 0.
func more(n int64, what string) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%d more %s)", n, what)
}
