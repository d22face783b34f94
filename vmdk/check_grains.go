package vmdk

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
)

// maxGrainReports bounds the corruptions Check lists for grains that do
// not inflate: an image whose every grain is bad is named by its first few
// and a count, not by millions of lines.
const maxGrainReports = 100

// grainMarkerEnd checks the marker of compressed grain g at GTE v and
// returns the byte just past its compressed data: the marker must name g's
// LBA and a valid size, and the data must lie inside the file to the
// byte (a file a few bytes short of its last grain is corrupt, even though
// its last sector is there in part).
func (e *sparseExtent) grainMarkerEnd(g int64, v uint32) (int64, error) {
	start := int64(v) * SectorSize
	var b [grainMarkerSize]byte
	if err := e.src.readFull(b[:], start, "grain marker"); err != nil {
		return 0, err
	}
	m := parseMarker(b[:])
	if m.val != uint64(g*e.grainBytes/SectorSize) || m.grainErr(e.grainBytes, e.capacity) != nil {
		return 0, fmt.Errorf("marker says LBA %d, %d bytes", m.val, m.size)
	}
	end := start + grainMarkerSize + int64(m.size)
	if end > e.src.end() {
		return 0, fmt.Errorf("lies past the end of the file (its %d compressed bytes end at byte %d of %d)", m.size, end, e.src.end())
	}
	return end, nil
}

// checkCompressedGrains inflates every compressed grain and reports those
// that do not inflate to exactly their length with a valid checksum: a
// zlib bomb, a short stream, a bad Adler-32. Grains whose marker is wrong
// were reported by grainSpan and are not inflated. The grains of one table
// are inflated in parallel, each worker into its own grain buffer, so
// memory stays at a few grains whatever the disk's size. gd (the grain
// directory's order) says which tables were already met.
func (e *sparseExtent) checkCompressedGrains(ctx context.Context, r *CheckReport, gd *tableOrder) error {
	var (
		mu   sync.Mutex
		bad  int
		bufs = make(chan []byte, runtime.GOMAXPROCS(0))
	)
	for range cap(bufs) {
		bufs <- nil
	}
	report := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if bad++; bad <= maxGrainReports {
			r.corrupt("%v", err)
		}
	}
	err := e.eachTable(gd, func(i int64, gt []uint32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if zeroPrefix(gt) == len(gt) {
			return nil // an empty table: nothing to inflate, at memory speed
		}
		return parallel(len(gt), func(j int) error {
			g, v := i*e.gtEntries+int64(j), gt[j]
			if v == 0 || (v == 1 && e.zeroedGTE) || g*e.grainBytes >= e.capacity {
				return nil // no grain, or one tableGrains reported
			}
			if e.markers {
				if _, err := e.grainMarkerEnd(g, v); err != nil {
					return nil // grainSpan reported it
				}
			}
			buf := <-bufs
			defer func() { bufs <- buf }()
			if n := e.grainLen(g); int64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			if err := e.inflateGrain(g, v, buf[:e.grainLen(g)], nil, 0); err != nil {
				report(err)
			}
			return nil
		})
	})
	if bad > maxGrainReports {
		r.corrupt("%s: %d more grains do not inflate", e.src.name, bad-maxGrainReports)
	}
	return err
}

// eachTable calls f with every grain table of the extent, in index order:
// those its grain directory names, or those that scanning a stream's
// markers built. Tables lying in a hole of the file (all empty) and
// tables a lower GD entry named already (gd says which) are passed over.
func (e *sparseExtent) eachTable(gd *tableOrder, f func(i int64, gt []uint32) error) error {
	if e.gd == nil {
		for _, i := range slices.Sorted(maps.Keys(e.tables)) {
			if err := f(int64(i), e.tables[i]); err != nil {
				return err
			}
		}
		return nil
	}
	var hole holeWindow
	for i, v := range e.gd {
		if v == 0 || gd.shared(i) || e.tableInHole(int64(i), &hole) {
			continue
		}
		gt, err := e.readTable(int64(v))
		if err != nil {
			return err
		}
		if err := f(int64(i), gt); err != nil {
			return err
		}
	}
	return nil
}
