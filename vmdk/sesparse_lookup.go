package vmdk

import (
	"encoding/binary"
	"fmt"
)

// Lookup in a seSparse extent, as in a hosted sparse one, costs what is
// allocated: a GD hole is one step however large, a table is one scan of
// its entries, and tables are cached (bounded) by table number, so GD
// entries naming one table share one copy.

// table returns the grain table GD entry i names, nil for a GD hole.
func (e *seSparseExtent) table(i int64) ([]uint64, error) {
	t, err := e.tableOf(i, e.gd[i])
	if err != nil || t < 0 {
		return nil, err
	}
	e.mu.Lock()
	gt, ok := e.tables[uint32(t)]
	e.mu.Unlock()
	if ok {
		return gt, nil
	}
	raw := make([]byte, seGTEntries*8)
	at := (e.h.gts.offset + t*seGTSectors) * SectorSize
	if err := e.src.readFull(raw, at, fmt.Sprintf("seSparse grain table %d", t)); err != nil {
		return nil, err
	}
	gt = make([]uint64, seGTEntries)
	for j := range gt {
		gt[j] = binary.LittleEndian.Uint64(raw[j*8:])
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cached, ok := e.tables[uint32(t)]; ok { // another reader won
		return cached, nil
	}
	if len(e.tables) >= max(1, e.cacheTables) {
		for k := range e.tables { // tables are never dirty: any one goes
			delete(e.tables, k)
			break
		}
	}
	e.tables[uint32(t)] = gt
	return gt, nil
}

// grainEntry decodes GT entry v of grain g: its kind and, for data, the
// byte offset of the grain in the file, bounded by the grains area and by
// the file (the last grain of a capacity that is not a grain multiple
// needs only its part inside the capacity).
func (e *seSparseExtent) grainEntry(g int64, v uint64) (runKind, int64, error) {
	switch v >> 60 {
	case seGTEUnallocated:
		if v != 0 {
			return 0, 0, fmt.Errorf("%s: %w: seSparse grain table entry of grain %d is %#016x: unallocated (type 0) with other bits set", e.src.name, ErrCorrupt, g, v)
		}
		return runUnallocated, 0, nil
	case seGTEUnmapped, seGTEZero:
		return runZero, 0, nil
	case seGTEAllocated:
		index := int64((v&0x0fff000000000000)>>48 | (v&0x0000ffffffffffff)<<12)
		if index >= e.grainSlots {
			return 0, 0, fmt.Errorf("%s: %w: seSparse grain %d is stored at grain index %d, past the %d grains of the grains area", e.src.name, ErrCorrupt, g, index, e.grainSlots)
		}
		host := (e.h.grains.offset + index*seGrainSectors) * SectorSize
		if need := min(seGrainBytes, e.capacity-g*seGrainBytes); host+need > e.src.end() {
			return 0, 0, fmt.Errorf("%s: %w: seSparse grain %d at grain index %d (byte %d) lies past the end of the file (%d bytes)", e.src.name, ErrCorrupt, g, index, host, e.src.end())
		}
		return runData, host, nil
	}
	return 0, 0, fmt.Errorf("%s: %w: seSparse grain table entry of grain %d is %#016x: type %d is not a grain type", e.src.name, ErrCorrupt, g, v, v>>60)
}

// lookup returns the longest run of one kind from off: GD holes are
// skipped in one step each, and data extends while its grains are
// contiguous in the file.
func (e *seSparseExtent) lookup(off, n int64) (run, error) {
	if off >= e.capacity {
		return run{kind: runUnallocated, n: n}, nil // past the capacity (a line smaller than it: no such offsets)
	}
	w := walk{end: off + min(n, e.capacity-off), pos: off, r: run{kind: runUnallocated}}
	for w.pos < w.end && !w.stop {
		ti := w.pos / seTableSpan
		gt, err := e.table(ti)
		if err != nil {
			return run{}, err
		}
		if gt == nil {
			w.unallocated((ti + 1) * seTableSpan)
			continue
		}
		if err := e.scanTable(gt, ti, &w); err != nil {
			return run{}, err
		}
	}
	w.r.n = min(w.pos, w.end) - off
	return w.r, nil
}

// scanTable extends the walk over the entries of the table of GD entry ti.
func (e *seSparseExtent) scanTable(gt []uint64, ti int64, w *walk) error {
	tableEnd := (ti + 1) * seTableSpan
	for w.pos < w.end && w.pos < tableEnd && !w.stop {
		g := w.pos / seGrainBytes
		k, host, err := e.grainEntry(g, gt[g%seGTEntries])
		if err != nil {
			return err
		}
		switch {
		case !w.started:
			w.r.kind, w.started = k, true
			if k == runData {
				w.r.host = host + w.pos%seGrainBytes
			}
		case k != w.r.kind, k == runData && host != w.next:
			w.stop = true
			return nil
		}
		w.next = host + seGrainBytes
		w.pos = (g + 1) * seGrainBytes
	}
	return nil
}

func (e *seSparseExtent) read(p []byte, off int64, r run) error {
	if r.kind != runData {
		return fmt.Errorf("vmdk: internal error: seSparse read of run kind %d", r.kind)
	}
	return e.src.readFull(p, r.host, "seSparse grain data")
}
