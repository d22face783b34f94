package vmdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The check-cost class of issue 12: Check of an image of huge virtual size
// costs what the image allocates (its directories, the tables it stores,
// its grains), and a corrupt variant of each image is still reported, so
// the shortcuts cannot hide corruption.

func TestHostileCheckCost(t *testing.T) {
	cases := []struct {
		name  string
		build func(t *testing.T, dir string) string
		// corrupt lists what the corruptions must say (all of it, in
		// one of them); nil: a clean image of grains grains.
		corrupt []string
		grains  int64
		b       bound
	}{{
		name: "qemu-img's 64 TiB monolithicSparse, tables in holes, the last MiB written",
		build: func(t *testing.T, dir string) string {
			return qemu64T(t, dir, nil)
		},
		grains: 16,
		// Its grain directory and redundant copy are 8 MiB each: what it
		// allocates, held by Open.
		b: bound{Time: 3 * time.Second, Mem: 40 << 20},
	}, {
		name: "the same with grain table 0 placed over the grain directory",
		build: func(t *testing.T, dir string) string {
			return qemu64T(t, dir, func(f *os.File, h *SparseHeader) error {
				for _, gd := range []uint64{h.GDOffset, h.RGDOffset} {
					if _, err := f.WriteAt(u32s(uint32(h.GDOffset)), int64(gd)*SectorSize); err != nil {
						return err
					}
				}
				return nil
			})
		},
		corrupt: []string{"grain directory", "grain table 0 ", "share sectors"},
		b:       bound{Time: 3 * time.Second, Mem: 40 << 20},
	}, {
		// The primary tables lie one after another, one run: the report
		// names the one table of it that the copy meets.
		name: "the same with redundant grain table 5 placed on grain table 7",
		build: func(t *testing.T, dir string) string {
			return qemu64T(t, dir, func(f *os.File, h *SparseHeader) error {
				gt7 := make([]byte, 4)
				if _, err := f.ReadAt(gt7, int64(h.GDOffset)*SectorSize+7*4); err != nil {
					return err
				}
				_, err := f.WriteAt(gt7, int64(h.RGDOffset)*SectorSize+5*4)
				return err
			})
		},
		corrupt: []string{"the grain table 7 and the redundant grain table 5 share sectors"},
		b:       bound{Time: 3 * time.Second, Mem: 40 << 20},
	}, {
		// Its primary table lies in a hole, read as zeros without reading
		// it: the copy that is not a hole still has to agree.
		name: "the same with an entry written into redundant grain table 3 only",
		build: func(t *testing.T, dir string) string {
			return qemu64T(t, dir, func(f *os.File, h *SparseHeader) error {
				rgt3 := make([]byte, 4)
				if _, err := f.ReadAt(rgt3, int64(h.RGDOffset)*SectorSize+3*4); err != nil {
					return err
				}
				_, err := f.WriteAt(u32s(uint32(h.OverHead)), int64(binary.LittleEndian.Uint32(rgt3))*SectorSize)
				return err
			})
		},
		corrupt: []string{"grain table 3 differs from its redundant copy"},
		b:       bound{Time: 3 * time.Second, Mem: 40 << 20},
	}, {
		// Its 2^17 grain tables lie in holes before the first grain: no
		// grain to inflate in any of them. (The stream-order proof still
		// reads them in sequence: its cost is a stream import's.)
		name: "qemu-img's 4 TiB streamOptimized, one grain written at the end",
		build: func(t *testing.T, dir string) string {
			sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", "s.vmdk", "4T")
			qemuIO(t, dir, "s.vmdk", "write -P 0xcd 4398046445568 64k")
			return filepath.Join(dir, "s.vmdk")
		},
		grains: 1,
		b:      bound{Time: 4 * time.Second, Mem: 40 << 20},
	}, {
		name:  "empty 512 TiB header, 2^20 absent grain tables",
		build: emptyBig,
		b:     bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:    "512 TiB whose one grain, at the far end, lies past the end of the file",
		build:   pastEndBig,
		corrupt: []string{fmt.Sprintf("grain %d (sector %d) lies past the end of the file", int64(gd512TiB1M)*gtes-1, gdEnd+4)},
		b:       bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:  "512 TiB whose 2^20 GD entries share one written, empty table",
		build: sharedEmptyBig,
		// The format gives each table its own place: sharing is reported,
		// once, with a count.
		corrupt: []string{fmt.Sprintf("the grain table 0 and the grain table 1 share sectors %d..%d (%d more grain tables lie there too)", gdEnd, gdEnd+3, gd512TiB1M-2)},
		b:       bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name: "512 TiB whose shared table lies over the grain directory",
		build: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "shared-gd.vmdk")
			bigKDMV(t, p, nil, map[int64][]byte{SectorSize: u32s(repeat(gdEnd-4, gd512TiB1M)...)}, 0)
			return p
		},
		corrupt: []string{"the grain directory and the grain table 0 share sectors"},
		b:       bound{Time: time.Second, Mem: 12 << 20},
	}, {
		// Not one after another: the directory is sorted to find them.
		name: "512 TiB whose GD entries alternate between two written tables of one grain each",
		build: func(t *testing.T, dir string) string {
			gd := make([]uint32, gd512TiB1M)
			for i := range gd {
				gd[i] = uint32(gdEnd + 4*(i%2))
			}
			at := int64(gdEnd + 8)
			p := filepath.Join(dir, "alternate.vmdk")
			bigKDMV(t, p, nil, map[int64][]byte{SectorSize: u32s(gd...),
				gdEnd * SectorSize: u32s(uint32(at)), (gdEnd + 4) * SectorSize: u32s(uint32(at + grain1M)),
				at * SectorSize: make([]byte, 2*grain1M*SectorSize)}, 0)
			return p
		},
		corrupt: []string{fmt.Sprintf("the grain table 1 and the grain table 3 share sectors %d..%d (%d more grain tables lie there too)", gdEnd+4, gdEnd+7, gd512TiB1M/2-2)},
		b:       bound{Time: 2 * time.Second, Mem: 16 << 20},
	}, {
		name:   "COWD of 2^32-1 one-sector grains, one grain at the far end",
		build:  func(t *testing.T, dir string) string { return cowdBig(t, dir, 0) },
		grains: 1,
		b:      bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:    "the same COWD with its grain over its grain directory",
		build:   func(t *testing.T, dir string) string { return cowdBig(t, dir, 5) },
		corrupt: []string{fmt.Sprintf("grain %d (sector 5) overlaps the grain directory", cowdSectors-1)},
		b:       bound{Time: time.Second, Mem: 12 << 20},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.build(t, t.TempDir())
			var r *CheckReport
			err := withinBound(t, c.b, func() (err error) {
				r, err = Check(context.Background(), path, CheckOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(r.Corruptions, "\n")
			if c.corrupt == nil {
				if !r.Clean() || r.Grains != c.grains {
					t.Fatalf("got %+v, want clean with %d grains", r, c.grains)
				}
				return
			}
			found := false
			for _, s := range r.Corruptions {
				ok := true
				for _, w := range c.corrupt {
					ok = ok && strings.Contains(s, w)
				}
				found = found || ok
			}
			if !found {
				t.Fatalf("corruptions:\n%s\nwant one saying %q", all, c.corrupt)
			}
			t.Logf("%d corruptions, the first: %s", len(r.Corruptions), r.Corruptions[0])
			// A table read from the wrong place names hundreds of bad
			// entries: the first are listed, the rest counted.
			if len(r.Corruptions) > maxGrainReports+4 {
				t.Fatalf("%d corruptions listed, want at most %d and a count", len(r.Corruptions), maxGrainReports+4)
			}
			if len(r.Corruptions) > maxGrainReports && !strings.Contains(all, "more grain table entries or grains are wrong") {
				t.Fatalf("%d corruptions listed without a count of the rest", len(r.Corruptions))
			}
		})
	}
}
