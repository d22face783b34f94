package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

// CheckReport is what Check found. Corruptions make data unreliable; leaks
// are an interrupted writer's harmless left-overs: allocated space nothing
// refers to, or a redundant grain table one update behind its primary.
type CheckReport struct {
	Image       string   `json:"image"`
	Corruptions []string `json:"corruptions"`
	Leaks       []string `json:"leaks"`
	LeakedBytes int64    `json:"leakedBytes"`
	Repaired    []string `json:"repaired"`
	// Grains counts allocated grains across the disk's sparse extents.
	Grains int64 `json:"grains"`

	// findings counts corruptEntry's findings, by kind, in the extent
	// being checked.
	findings [2]int
}

// Clean reports a check that found nothing.
func (r *CheckReport) Clean() bool { return len(r.Corruptions) == 0 && len(r.Leaks) == 0 }

func (r *CheckReport) corrupt(format string, a ...any) {
	r.Corruptions = append(r.Corruptions, fmt.Sprintf(format, a...))
}

// Kinds of corruptEntry's findings, counted apart so that hundreds of bad
// entries of a misplaced table do not hide the misplacement.
const (
	aboutGrains = iota // a grain table entry or its grain
	aboutTables        // a directory entry, a table, where it lies
)

// corruptEntry reports a finding about one directory entry, table or
// grain. A small hostile file can hold millions of such entries, so past
// maxGrainReports of one kind in one extent they are only counted (see
// endEntries): the report stays a few KiB, its first findings exact.
func (r *CheckReport) corruptEntry(kind int, format string, a ...any) {
	if r.findings[kind]++; r.findings[kind] <= maxGrainReports {
		r.corrupt(format, a...)
	}
}

// endEntries closes corruptEntry's counts for extent name.
func (r *CheckReport) endEntries(name string) {
	for kind, what := range []string{"grain table entries or grains", "grain directory entries or grain tables"} {
		if n := r.findings[kind] - maxGrainReports; n > 0 {
			r.corrupt("%s: %d more %s are wrong", name, n, what)
		}
	}
	r.findings = [2]int{}
}

// behind reports whether old is an earlier state of cur: every entry that
// differs was unallocated (0) or a zeroed grain (1) in old.
func behind(old, cur []uint32) bool {
	for j := range old {
		if old[j] != cur[j] && old[j] > 1 {
			return false
		}
	}
	return true
}

// CheckOptions controls Check.
type CheckOptions struct {
	// Options opens the image (its ReadWrite is ignored: Check opens the
	// image for writing exactly when Repair is set).
	Options
	// Repair fixes what is safe to fix (see Check).
	Repair bool
}

// Check verifies what qemu-img check does not: the grain directory against
// its redundant copy and every grain table against its copy, every grain
// table entry inside the file and grain-aligned, no two entries sharing a
// grain, no grain over metadata, stream markers and footer, and the chain's
// CIDs. With repair it fixes what is safe to fix: a grain table rebuilt from
// a valid redundant copy (or the redundant copy from the primary), leaked
// grains at the end of the file truncated away. Of seSparse extents it
// checks the grain tables' entries, their grains inside the grains area
// and the file and used once, and reports an unreplayed journal; it does
// not repair them (ErrUnsupported: the format is read-only here). Check
// stops when ctx is done, returning ctx's error.
func Check(ctx context.Context, path string, opts CheckOptions) (*CheckReport, error) {
	o := opts.Options
	o.ReadWrite = opts.Repair
	r := &CheckReport{Image: path}
	d, err := Open(path, o)
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrChainBroken) || errors.Is(err, errDirtyJournal) {
			r.corrupt("%v", err)
			return r, nil
		}
		return nil, err
	}
	defer d.Close()
	if opts.Repair {
		if err := refuseSESparseRepair(d); err != nil {
			return nil, err
		}
	}
	if err := d.ChainError(); err != nil {
		r.corrupt("%v", err)
	}
	checked := map[*sparseExtent]bool{} // lines naming one file share it
	seChecked := map[*seSparseExtent]bool{}
	allocated := map[*sparseExtent]int64{}
	uses := fileUses(d)
	for _, pe := range d.extents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if se, ok := pe.ext.(*seSparseExtent); ok {
			se.checkLine(r, pe)
		}
		if se, ok := pe.ext.(*seSparseExtent); ok && !seChecked[se] {
			seChecked[se] = true
			err := se.check(ctx, r)
			r.endEntries(se.src.name)
			if err != nil {
				return nil, err
			}
		}
		se, ok := pe.ext.(*sparseExtent)
		if !ok {
			continue
		}
		if _, ok := allocated[se]; !ok {
			allocated[se] = se.allocatedEnd()
		}
		checkLine(r, pe, se, allocated[se])
		if checked[se] {
			continue
		}
		checked[se] = true
		err := se.check(ctx, r, opts.Repair, se.useOf(uses))
		r.endEntries(se.src.name)
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// span is a range of sectors in an extent file.
type span struct {
	start, end int64
	what       string
}

// check runs Check's steps on one sparse extent: the grain tables against
// the directory, their redundant copies and the file; overlaps; then the
// stream's tail or the leaks past the last grain.
func (e *sparseExtent) check(ctx context.Context, r *CheckReport, repair bool, use *fileUse) error {
	fileSectors := (e.src.end() + SectorSize - 1) / SectorSize
	corruptions := len(r.Corruptions)
	if e.pinned {
		r.Leaks = append(r.Leaks, fmt.Sprintf("%s: no grain directory (footer missing); grains were indexed by scanning their markers", e.src.name))
	}
	grains := runList{merge: !e.compressed}
	gtSectors := (e.gtEntries*4 + SectorSize - 1) / SectorSize
	dirs := []*tableOrder{orderTables(e.gd, runOfTable, gtSectors)}
	if e.rgd != nil {
		dirs = append(dirs, orderTables(e.rgd, runOfRTable, gtSectors))
	}
	if err := e.checkTables(ctx, r, repair, fileSectors, &grains, dirs); err != nil {
		return err
	}
	if e.pinned {
		e.scannedGrains(r, fileSectors, &grains)
	}
	for _, g := range grains.runs {
		r.Grains += g.n
	}
	metaEnd := e.checkOverlaps(r, grains.runs, e.metadataSpans(), dirs...)
	if e.compressed {
		if err := e.checkCompressedGrains(ctx, r, dirs[0]); err != nil {
			return err
		}
		return e.checkStreamTail(r)
	}
	// With the extent corrupt, what its tables say is unused may be what a
	// damaged table no longer names (a grain its redundant copy still
	// points at): leaks are then reported, not cut.
	if len(r.Corruptions) > corruptions {
		use.doubt = true
	}
	return e.checkLeaks(r, grains.runs, metaEnd, fileSectors, repair, use)
}

// metadataSpans are the sectors of the header, the embedded descriptor
// and the grain directories.
func (e *sparseExtent) metadataSpans() []span {
	meta := []span{{0, 1, "header"}}
	h := e.header
	if h == nil {
		meta[0].end = cowdHeaderSize / SectorSize
		if e.gd != nil {
			gdSectors := (int64(len(e.gd))*4 + SectorSize - 1) / SectorSize
			meta = append(meta, span{e.cowdGD, e.cowdGD + gdSectors, "grain directory"})
		}
		return meta
	}
	if h.DescriptorSize > 0 {
		meta = append(meta, span{int64(h.DescriptorOffset), int64(h.DescriptorOffset + h.DescriptorSize), "descriptor"})
	}
	if e.gd != nil {
		gdSectors := (int64(len(e.gd))*4 + SectorSize - 1) / SectorSize
		meta = append(meta, span{int64(h.GDOffset), int64(h.GDOffset) + gdSectors, "grain directory"})
		if e.rgd != nil {
			meta = append(meta, span{int64(h.RGDOffset), int64(h.RGDOffset) + gdSectors, "redundant grain directory"})
		}
	}
	return meta
}

// checkTables checks every grain table the directory names: against its
// redundant copy (repairing one from the other when asked) and each entry
// against the capacity and the file, adding the grains to grains. A table
// lying in a hole of the file is all zeros and is not read; a GD entry
// naming the table (and redundant table) of a lower entry, as dirs say,
// is not read again (checkOverlaps reports the sharing).
func (e *sparseExtent) checkTables(ctx context.Context, r *CheckReport, repair bool, fileSectors int64, grains *runList, dirs []*tableOrder) error {
	var hole, rhole holeWindow
	for i := range e.gd {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if e.gd[i] == 0 {
			if e.rgd != nil && e.rgd[i] != 0 {
				r.corruptEntry(aboutTables, "%s: grain directory entry %d is empty but its redundant copy points at sector %d", e.src.name, i, e.rgd[i])
			}
			continue
		}
		redundant := e.rgd != nil && e.rgd[i] != 0
		if dirs[0].shared(i) && (!redundant || dirs[1].shared(i)) {
			continue // the same table(s) as a lower entry, checked there
		}
		gt, err := e.tableOrHole(int64(e.gd[i]), &hole)
		if err != nil {
			return err
		}
		if redundant {
			repaired := len(r.Repaired)
			if gt, err = e.checkRedundantTable(r, i, gt, fileSectors, repair, &rhole); err != nil {
				return err
			}
			if len(r.Repaired) > repaired {
				hole, rhole = holeWindow{}, holeWindow{} // a rewrite fills a hole
			}
		}
		e.tableGrains(r, i, gt, fileSectors, grains)
	}
	return nil
}

// tableOrHole reads the grain table at sector, or returns nil (all
// entries zero) when it lies wholly in a hole of the file.
func (e *sparseExtent) tableOrHole(sector int64, w *holeWindow) ([]uint32, error) {
	if e.sectorsInHole(sector, w) {
		return nil, nil
	}
	return e.readTable(sector)
}

// checkRedundantTable compares grain table i with its redundant copy and,
// with repair, rewrites the wrong one from the other. It returns the table
// to check the grains of: the repaired content when it was repaired. A
// nil table (one in a hole) is all zeros.
func (e *sparseExtent) checkRedundantTable(r *CheckReport, i int, gt []uint32, fileSectors int64, repair bool, w *holeWindow) ([]uint32, error) {
	name := e.src.name
	rgt, err := e.tableOrHole(int64(e.rgd[i]), w)
	if err != nil {
		return nil, err
	}
	if gt == nil && rgt == nil {
		return nil, nil
	}
	if gt == nil {
		gt = make([]uint32, e.gtEntries)
	}
	if rgt == nil {
		rgt = make([]uint32, e.gtEntries)
	}
	if slices.Equal(gt, rgt) {
		return gt, nil
	}
	bad := e.badEntries(gt, i, fileSectors)
	from, to, fromName := gt, e.rgd[i], "grain table"
	switch {
	case bad > 0 && e.badEntries(rgt, i, fileSectors) == 0:
		from, to, fromName = rgt, e.gd[i], "redundant grain table"
		r.corruptEntry(aboutTables, "%s: grain table %d differs from its redundant copy", name, i)
	case bad == 0 && behind(rgt, gt):
		// Writers update the primary first, so a writer killed between
		// the two copies leaves this: the data reads right, only the copy
		// is stale.
		r.Leaks = append(r.Leaks, fmt.Sprintf("%s: redundant grain table %d is behind the primary (an interrupted update)", name, i))
	default:
		r.corruptEntry(aboutTables, "%s: grain table %d differs from its redundant copy", name, i)
	}
	if !repair {
		return gt, nil
	}
	// A copy rewritten where the directory places it must not land on the
	// descriptor, a directory, another table or a grain.
	if err := e.checkTableSpot(int64(i)); errors.Is(err, ErrCorrupt) {
		r.corrupt("%v (grain table %d not repaired)", err, i)
		return gt, nil
	} else if err != nil {
		return nil, err
	}
	if err := e.writeTable(int64(to), from); err != nil {
		return nil, err
	}
	r.Repaired = append(r.Repaired, fmt.Sprintf("%s: grain table %d rewritten from the %s", name, i, fromName))
	e.mu.Lock()
	delete(e.tables, uint32(i))
	e.mu.Unlock()
	return from, nil
}

// tableGrains checks the allocated entries of grain table i and returns
// adds their grains to grains.
func (e *sparseExtent) tableGrains(r *CheckReport, i int, gt []uint32, fileSectors int64, grains *runList) {
	for j, v := range gt {
		g := int64(i)*e.gtEntries + int64(j)
		if v == 0 || (v == 1 && e.zeroedGTE) {
			continue
		}
		if g*e.grainBytes >= e.capacity {
			r.corruptEntry(aboutGrains, "%s: grain table %d entry %d points at sector %d past the capacity", e.src.name, i, j, v)
			continue
		}
		if s, ok := e.grainSpan(r, g, v, fileSectors); ok {
			grains.add(s)
		}
	}
}

// scannedGrains are the grains of a stream without a grain directory, as
// its markers indexed them.
func (e *sparseExtent) scannedGrains(r *CheckReport, fileSectors int64, grains *runList) {
	for _, i := range slices.Sorted(maps.Keys(e.tables)) {
		gt := e.tables[i]
		for j, v := range gt {
			if v != 0 {
				if s, ok := e.grainSpan(r, int64(i)*e.gtEntries+int64(j), v, fileSectors); ok {
					grains.add(s)
				}
			}
		}
	}
}

// checkLeaks reports the sectors past the last grain and the metadata that
// nothing refers to, and with repair truncates them away, unless another
// extent, descriptor or disk of the chain uses the same file: then what
// it uses is not a leak, and the rest is only reported.
func (e *sparseExtent) checkLeaks(r *CheckReport, grains []sectorRun, metaEnd, fileSectors int64, repair bool, use *fileUse) error {
	name := e.src.name
	used := max(metaEnd, (use.flatEnd+SectorSize-1)/SectorSize)
	if h := e.header; h != nil {
		used = max(used, int64(h.OverHead))
	}
	for _, g := range grains {
		used = max(used, g.end)
	}
	if fileSectors <= used || use.checked {
		return nil
	}
	use.checked = true
	leaked := (fileSectors - used) * SectorSize
	if use.shared() || use.doubt {
		why := "other extents or a descriptor use the same file"
		if use.doubt {
			why = "the extent is corrupt"
		}
		r.Leaks = append(r.Leaks, fmt.Sprintf("%s: %d bytes past the last grain are not referenced (not repaired: %s)", name, leaked, why))
		r.LeakedBytes += leaked
		return nil
	}
	r.Leaks = append(r.Leaks, fmt.Sprintf("%s: %d bytes past the last grain are not referenced", name, leaked))
	r.LeakedBytes += leaked
	if !repair {
		return nil
	}
	if err := e.src.f.Truncate(used * SectorSize); err != nil {
		return fmt.Errorf("%s: truncate leaked grains: %w", name, err)
	}
	if err := e.src.f.Sync(); err != nil {
		return err
	}
	r.Repaired = append(r.Repaired, fmt.Sprintf("%s: truncated %d leaked bytes", name, leaked))
	return nil
}

// grainSpan checks one allocated grain's entry and returns the sectors it
// occupies.
func (e *sparseExtent) grainSpan(r *CheckReport, g int64, v uint32, fileSectors int64) (sectorRun, bool) {
	what := fmt.Sprintf("grain %d (sector %d)", g, v)
	start := int64(v)
	if e.compressed {
		if e.markers {
			end, err := e.grainMarkerEnd(g, v)
			if err != nil {
				r.corruptEntry(aboutGrains, "%s: %s: %v", e.src.name, what, err)
				return sectorRun{}, false
			}
			return sectorRun{start: start, end: (end + SectorSize - 1) / SectorSize, first: g, n: 1, of: runOfGrain}, true
		}
		return sectorRun{start: start, end: start + 1, first: g, n: 1, of: runOfGrain}, start < fileSectors
	}
	// To the byte: a file a few bytes short of its last grain is corrupt.
	if end := start*SectorSize + e.grainLen(g); end > e.src.end() {
		r.corruptEntry(aboutGrains, "%s: %s lies past the end of the file (it ends at byte %d of %d)", e.src.name, what, end, e.src.end())
		return sectorRun{}, false
	}
	if h := e.header; h != nil && (start-int64(h.OverHead))%(e.grainBytes/SectorSize) != 0 {
		r.corruptEntry(aboutGrains, "%s: %s is not grain-aligned", e.src.name, what)
	}
	return sectorRun{start: start, end: start + e.grainBytes/SectorSize, first: g, n: 1, of: runOfGrain}, true
}

// badEntries counts entries of GT i that cannot be valid.
func (e *sparseExtent) badEntries(gt []uint32, i int, fileSectors int64) int {
	bad := 0
	for _, v := range gt {
		if v > 1 && int64(v) >= fileSectors || (v == 1 && !e.zeroedGTE) {
			bad++
		}
	}
	return bad
}

// checkStreamTail verifies a stream's footer against its header and the
// end-of-stream marker, and that a sequential reader (an import from
// stdin or HTTP) reads the file to a proven end: what the random-access
// reader accepts but a stream import would refuse is reported.
func (e *sparseExtent) checkStreamTail(r *CheckReport) error {
	if !e.markers {
		return nil
	}
	if err := verifyStream(io.NewSectionReader(e.src.r, 0, e.src.size)); err != nil {
		switch {
		case errors.Is(err, ErrUnsupported):
			// Valid, only not in stream order (grains out of order): it
			// needs random access, which an import spools for.
		case errors.Is(err, ErrCorrupt):
			r.corrupt("%s: read as a stream (stdin, HTTP): %v", e.src.name, err)
		default:
			return err
		}
	}
	size := e.src.size
	first := make([]byte, SectorSize)
	if err := e.src.readFull(first, 0, "header"); err != nil {
		return err
	}
	h0, err := parseSparseHeader(first)
	if err != nil {
		r.corrupt("%s: header: %v", e.src.name, err)
		return nil
	}
	if h0.GDOffset != gdAtEnd {
		return nil // qemu and open-vmdk layouts keep the directory in the header
	}
	f := e.header
	if f.Capacity != h0.Capacity || f.GrainSize != h0.GrainSize || f.NumGTEsPerGT != h0.NumGTEsPerGT {
		r.corrupt("%s: footer (capacity %d, grain %d) disagrees with the header (capacity %d, grain %d)", e.src.name, f.Capacity, f.GrainSize, h0.Capacity, h0.GrainSize)
	}
	eos := make([]byte, SectorSize)
	if err := e.src.readFull(eos, size-SectorSize, "end-of-stream marker"); err != nil {
		return err
	}
	if !bytes.Equal(eos, make([]byte, SectorSize)) {
		r.corrupt("%s: the last sector is not an end-of-stream marker", e.src.name)
	}
	return nil
}
