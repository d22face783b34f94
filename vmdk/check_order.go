package vmdk

import "slices"

// A grain directory is walked in the order of its tables' sectors to find
// tables that share sectors, with each other or with other metadata, at
// the cost of the directory itself: when the tables lie in index order
// (every writer's layout) the directory is its own order; otherwise an
// index of 4 bytes an entry is sorted. Runs of tables are built as the
// walk goes, never held all at once.

// tableOrder is one grain directory in sector order.
type tableOrder struct {
	dir       []uint32
	order     []uint32 // GD indexes by (sector, index); nil: dir is in order
	dup       []uint64 // bit i: entry i names the table of a lower entry
	of        runOf
	gtSectors int64
	pos       int // the walk's next position in order (or in dir)
}

// orderTables indexes dir (a grain directory or its redundant copy).
func orderTables(dir []uint32, of runOf, gtSectors int64) *tableOrder {
	o := &tableOrder{dir: dir, of: of, gtSectors: gtSectors, dup: make([]uint64, (len(dir)+63)/64)}
	var last uint32
	sorted, tables := true, 0
	for _, v := range dir {
		if v != 0 {
			sorted, tables, last = sorted && v >= last, tables+1, v
		}
	}
	if !sorted {
		o.order = make([]uint32, 0, tables)
		for i, v := range dir {
			if v != 0 {
				o.order = append(o.order, uint32(i))
			}
		}
		slices.SortFunc(o.order, func(a, b uint32) int {
			if dir[a] != dir[b] {
				return int(int64(dir[a]) - int64(dir[b]))
			}
			return int(int64(a) - int64(b))
		})
	}
	prev := -1
	for i, ok := o.next(); ok; i, ok = o.next() {
		if prev >= 0 && dir[prev] == dir[i] {
			o.dup[i/64] |= 1 << (i % 64)
		}
		prev = i
	}
	o.pos = 0
	return o
}

// shared says GD entry i names the same table as a lower entry.
func (o *tableOrder) shared(i int) bool { return o.dup[i/64]&(1<<(i%64)) != 0 }

// next is the GD index at the walk's position, which it passes.
func (o *tableOrder) next() (int, bool) {
	if o.order != nil {
		if o.pos >= len(o.order) {
			return 0, false
		}
		o.pos++
		return int(o.order[o.pos-1]), true
	}
	for o.pos < len(o.dir) && o.dir[o.pos] == 0 {
		o.pos++
	}
	if o.pos >= len(o.dir) {
		return 0, false
	}
	o.pos++
	return o.pos - 1, true
}

// nextRun is the next run of tables in sector order: tables one after
// another in index order, or entries naming one table.
func (o *tableOrder) nextRun() (sectorRun, bool) {
	i, ok := o.next()
	if !ok {
		return sectorRun{}, false
	}
	s := int64(o.dir[i])
	r := sectorRun{start: s, end: s + o.gtSectors, first: int64(i), n: 1, of: o.of}
	for {
		pos := o.pos
		j, ok := o.next()
		switch {
		case !ok:
			return r, true
		case int64(o.dir[j]) == r.start && (r.n == 1 || r.same):
			if r.n == 1 {
				r.second = int64(j)
			}
			r.same, r.n = true, r.n+1
		case !r.same && int64(o.dir[j]) == r.end && int64(j) == r.first+r.n:
			r.end, r.n = r.end+o.gtSectors, r.n+1
		default:
			o.pos = pos
			return r, true
		}
	}
}
