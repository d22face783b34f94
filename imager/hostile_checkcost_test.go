package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The check-cost class of issue 12 through `imager check`: a Job's check
// of an image of huge virtual size stays within tens of MiB and seconds,
// and the corrupt variant of each image still exits 2 naming what is wrong.

// patch writes b at byte off of path and, when size > 0, sets its size.
func patch(t *testing.T, path string, off int64, b []byte, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if size > 0 {
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
}

// entries encodes n grain directory or table entries of v.
func entries(v uint32, n int) []byte {
	b := make([]byte, 0, 4*n)
	for range n {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// bigCOWD writes a COWD of 2^32-1 one-sector grains (2 TiB) whose one
// grain table holds the last grain, at the file's end or at sector grainAt
// when set, and returns its descriptor.
func bigCOWD(t *testing.T, dir string, grainAt uint32) string {
	const sectors, gtes = 1<<32 - 1, 4096
	const gdEntries = (sectors + gtes - 1) / gtes
	gt := int64(4 + gdEntries*4/512)
	at := gt + gtes*4/512
	h := make([]byte, 2048)
	copy(h, "COWD")
	for i, v := range []uint32{1, 3, sectors, 1, 4, gdEntries, uint32(at + 1)} {
		binary.LittleEndian.PutUint32(h[4+4*i:], v)
	}
	if grainAt == 0 {
		grainAt = uint32(at)
	}
	delta := filepath.Join(dir, "c-delta.vmdk")
	if err := os.WriteFile(delta, h, 0o644); err != nil {
		t.Fatal(err)
	}
	patch(t, delta, 4*512+(gdEntries-1)*4, entries(uint32(gt), 1), (at+1)*512)
	patch(t, delta, gt*512+(sectors-1)%gtes*4, entries(grainAt, 1), 0)
	p := filepath.Join(dir, "c.vmdk")
	os.WriteFile(p, []byte(fmt.Sprintf("version=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW %d VMFSSPARSE \"c-delta.vmdk\"\n", uint64(sectors))), 0o644)
	return p
}

func TestHostileCheckCost(t *testing.T) {
	const gd512 = 1 << 20 // GD entries of bareKDMV's 512 TiB
	const gdEnd = 1 + gd512*4/512
	cases := []struct {
		name  string
		build func(t *testing.T, dir string) string
		code  int
		// want is in one corruption; grains the count of a clean image.
		want   string
		grains int64
		b      bound
	}{{
		name: "qemu-img's 64 TiB monolithicSparse, its last MiB written",
		build: func(t *testing.T, dir string) string {
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "q.vmdk", "64T")
			qemu(t, dir, "qemu-io", "-c", "write -P 0xcd 70368743129088 1M", "q.vmdk")
			return filepath.Join(dir, "q.vmdk")
		},
		grains: 16,
		b:      bound{Time: 3 * time.Second, Mem: 38 << 20},
	}, {
		name: "the same with its last grain cut off the file",
		build: func(t *testing.T, dir string) string {
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "q.vmdk", "64T")
			qemu(t, dir, "qemu-io", "-c", "write -P 0xcd 70368743129088 1M", "q.vmdk")
			p := filepath.Join(dir, "q.vmdk")
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			patch(t, p, 0, nil, fi.Size()-64<<10) // the last grain's 64 KiB
			return p
		},
		code: checkCorrupt,
		want: "lies past the end of the file",
		b:    bound{Time: 3 * time.Second, Mem: 38 << 20},
	}, {
		name: "empty 512 TiB header",
		build: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "e.vmdk")
			bareKDMV(t, p, sectors512TiB, false)
			return p
		},
		b: bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name: "512 TiB whose 2^20 GD entries share one written, empty table",
		build: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			bareKDMV(t, p, sectors512TiB, false)
			patch(t, p, 512, entries(gdEnd, gd512), 0)
			patch(t, p, gdEnd*512, make([]byte, 2048), 0)
			return p
		},
		code: checkCorrupt,
		want: fmt.Sprintf("the grain table 0 and the grain table 1 share sectors %d..%d (%d more grain tables lie there too)", gdEnd, gdEnd+3, gd512-2),
		b:    bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name: "512 TiB whose one grain, at the far end, is cut off the file",
		build: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "f.vmdk")
			bareKDMV(t, p, sectors512TiB, true)
			patch(t, p, 0, nil, (gdEnd+4+1024)*512) // half the grain
			return p
		},
		code: checkCorrupt,
		want: fmt.Sprintf("grain %d (sector %d) lies past the end of the file", gd512*512-1, gdEnd+4),
		b:    bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name:   "COWD of 2^32-1 one-sector grains, one grain at the far end",
		build:  func(t *testing.T, dir string) string { return bigCOWD(t, dir, 0) },
		grains: 1,
		b:      bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name:  "the same COWD with its grain over its grain directory",
		build: func(t *testing.T, dir string) string { return bigCOWD(t, dir, 5) },
		code:  checkCorrupt,
		want:  fmt.Sprintf("grain %d (sector 5) overlaps the grain directory", 1<<32-2),
		b:     bound{Time: 2 * time.Second, Mem: 22 << 20},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.build(t, t.TempDir())
			r := runBounded(t, c.b, nil, "check", "--output=json", path)
			var rep struct {
				Corruptions, Leaks []string
				Grains             int64
			}
			if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
				t.Fatalf("exit %d, stdout %.300q, stderr %q: %v", r.Code, r.Stdout, r.Stderr, err)
			}
			if r.Code != c.code {
				t.Fatalf("exit %d, report %+v; want exit %d", r.Code, rep, c.code)
			}
			if c.code == checkClean && (len(rep.Corruptions) != 0 || len(rep.Leaks) != 0 || rep.Grains != c.grains) {
				t.Fatalf("report %+v, want clean with %d grains", rep, c.grains)
			}
			if c.code == checkCorrupt && !strings.Contains(strings.Join(rep.Corruptions, "\n"), c.want) {
				t.Fatalf("corruptions %q, want one saying %q", rep.Corruptions, c.want)
			}
		})
	}
}
