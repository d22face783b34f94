package vmdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileSESparse writes a seSparse extent of capacity sectors in a
// sparse file of size bytes, and a descriptor h.vmdk naming it without a
// parent: const header, clean volatile header, a GD at sector 8 of
// gdSectors with the entries gd sets, 16 grain tables after it (table 0
// holding table0, if given), grains after them.
func hostileSESparse(t testing.TB, dir string, capacity, gdSectors, size int64, gd map[int64]uint64, table0 []byte) string {
	t.Helper()
	le := binary.LittleEndian
	h := make([]byte, SectorSize)
	gts := 8 + gdSectors
	grains := gts + 16*seGTSectors
	for i, v := range []uint64{seSparseMagic, seSparseVersion, uint64(capacity), seGrainSectors, seGTSectors, 0, 0, 0, 0, 0,
		1, 1, 2, 2, 4, 4, 8, uint64(gdSectors), uint64(gts), 16 * seGTSectors, 0, 0, 0, 0, uint64(grains), uint64(capacity)} {
		le.PutUint64(h[i*8:], v)
	}
	pieces := map[int64][]byte{0: h, SectorSize: le.AppendUint64(nil, seSparseVolatileMagic)}
	for i, v := range gd {
		pieces[8*SectorSize+i*8] = le.AppendUint64(nil, v)
	}
	if table0 != nil {
		pieces[gts*SectorSize] = table0
	}
	sparseFile(t, filepath.Join(dir, "h-sesparse.vmdk"), size, pieces)
	top := filepath.Join(dir, "h.vmdk")
	writeFile(t, top, fmt.Appendf(nil, "version=1\nCID=00000001\nparentCID=ffffffff\ncreateType=\"seSparse\"\nRW %d SESPARSE \"h-sesparse.vmdk\"\n", capacity))
	return top
}

// TestHostileSESparseCost: what a few KiB of seSparse can claim costs
// what the file holds, not what it claims.
func TestHostileSESparseCost(t *testing.T) {
	const claim = int64(maxDiskSectors) // 512 TiB: 2^25 GD entries, 256 MiB of directory
	t.Run("truncated-directory", func(t *testing.T) {
		top := hostileSESparse(t, t.TempDir(), claim, 1<<19, 1<<20, nil, nil)
		err := withinBound(t, bound{Time: time.Second, Mem: 4 << 20}, func() error { _, err := Open(top, Options{}); return err })
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "File truncated") {
			t.Fatalf("Open: %v", err)
		}
	})
	t.Run("directory-over-budget", func(t *testing.T) {
		top := hostileSESparse(t, t.TempDir(), claim, 1<<19, 300<<20, nil, nil)
		err := withinBound(t, bound{Time: time.Second, Mem: 4 << 20}, func() error { _, err := Open(top, Options{}); return err })
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "grain directories") {
			t.Fatalf("Open: %v", err)
		}
	})
	t.Run("every-gd-entry-one-table", func(t *testing.T) {
		// 64 GiB whose 4096 GD entries all name table 0, whose entries say
		// zero: a read costs one table, Check one table scan and a
		// bounded report.
		gd := map[int64]uint64{}
		for i := range int64(4096) {
			gd[i] = seGDAllocated << 32
		}
		table0 := make([]byte, seGTEntries*8)
		for j := range seGTEntries {
			binary.LittleEndian.PutUint64(table0[j*8:], seGTEZero<<60)
		}
		top := hostileSESparse(t, t.TempDir(), 64<<30/SectorSize, 64, 64<<20, gd, table0)
		err := withinBound(t, bound{Time: 20 * time.Second, Mem: 16 << 20}, func() error {
			d, err := Open(top, Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			m, err := d.Map(context.Background())
			if err != nil {
				return err
			}
			if len(m) != 1 || !m[0].Zero || m[0].Data || m[0].Length != 64<<30 {
				t.Errorf("Map: %+v", m)
			}
			r, err := Check(context.Background(), top, CheckOptions{})
			if err != nil {
				return err
			}
			if len(r.Corruptions) != maxGrainReports+1 || !strings.Contains(r.Corruptions[maxGrainReports], "3995 more") {
				t.Errorf("Check: %d findings: %.300q", len(r.Corruptions), r.Corruptions)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
