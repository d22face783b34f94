package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The cost class of issue 12: images of huge virtual size made from tiny
// files. Opening, mapping and reading them must cost in proportion to what
// they allocate, not to their virtual size.

const (
	tib512      = int64(1) << 49 // bytes: the largest capacity a header may claim
	bigSectors  = uint64(1) << 40
	grain1M     = 2048 // sectors
	gtes        = 512
	gd512TiB1M  = 1 << 20 // GD entries of 512 TiB in 1 MiB grains
	cowdSectors = 1<<32 - 1
)

// sparseFile writes a file of size bytes holding pieces (byte offset ->
// bytes); everything else is a hole, so a multi-MiB grain directory of
// zeros costs no disk.
func sparseFile(t testing.TB, path string, size int64, pieces map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range pieces {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

func u32s(v ...uint32) []byte { return appendEntries(nil, v) }

// bigKDMV is a bare 512 TiB hosted sparse extent in 1 MiB grains with its
// GD at sector 1 (2^20 entries, 4 MiB), the GD entries set, the tables and
// grains placed: what a hostile image can say in a few KiB.
func bigKDMV(t testing.TB, path string, gd map[int]uint32, pieces map[int64][]byte, size int64) {
	t.Helper()
	h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: bigSectors, GrainSize: grain1M,
		NumGTEsPerGT: gtes, GDOffset: 1, OverHead: 1 + gd512TiB1M*4/SectorSize}
	all := map[int64][]byte{0: h.marshal()}
	for i, v := range gd {
		all[SectorSize+int64(i)*4] = u32s(v)
	}
	for off, b := range pieces {
		all[off] = b
	}
	sparseFile(t, path, max(size, int64(h.OverHead)*SectorSize), all)
}

// gdEnd is the first sector after bigKDMV's header and GD.
const gdEnd = 1 + gd512TiB1M*4/SectorSize

// costCase is one hostile image and what mapping and reading it must give.
type costCase struct {
	name  string
	build func(t *testing.T, dir string) string // returns the image to open
	want  error                                 // nil or the sentinel Map fails with
	// maps is the number of merged mappings; first and last their kinds.
	maps        int
	first, last string
	// pattern: the bytes of the last mapping's first 64 KiB (data cases),
	// which qemu-io must read the same.
	pattern byte
	b       bound
}

// cowdBig is a COWD of 2^32-1 one-sector grains whose one grain table
// holds the last grain, at the file's end or, when grainAt is set, there.
func cowdBig(t *testing.T, dir string, grainAt uint32) string {
	const gdEntries = (cowdSectors + cowdGTEsPerGT - 1) / cowdGTEsPerGT
	gt := int64(4 + gdEntries*4/SectorSize)
	at := gt + cowdGTEsPerGT*4/SectorSize
	g := int64(cowdSectors - 1)
	h := make([]byte, cowdHeaderSize)
	copy(h, magicCOWD)
	for i, v := range []uint32{1, 3, cowdSectors, 1, 4, gdEntries, uint32(at + 1)} {
		binary.LittleEndian.PutUint32(h[4+4*i:], v)
	}
	table := make([]uint32, cowdGTEsPerGT)
	table[g%cowdGTEsPerGT] = uint32(at)
	if grainAt != 0 {
		table[g%cowdGTEsPerGT] = grainAt
	}
	sparseFile(t, filepath.Join(dir, "c-delta.vmdk"), (at+1)*SectorSize, map[int64][]byte{0: h,
		4*SectorSize + (g/cowdGTEsPerGT)*4: u32s(uint32(gt)),
		gt * SectorSize:                    u32s(table...),
		at * SectorSize:                    bytes.Repeat([]byte{0xcd}, SectorSize)})
	p := filepath.Join(dir, "c.vmdk")
	writeFile(t, p, []byte(fmt.Sprintf("version=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW %d VMFSSPARSE \"c-delta.vmdk\"\n", cowdSectors)))
	return p
}

// qemu64T is qemu-img's largest monolithicSparse image with its last MiB
// written; edit, when set, changes it given its header.
func qemu64T(t *testing.T, dir string, edit func(f *os.File, h *SparseHeader) error) string {
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "q64.vmdk", "64T")
	qemuIO(t, dir, "q64.vmdk", "write -P 0xcd 70368743129088 1M")
	p := filepath.Join(dir, "q64.vmdk")
	if edit == nil {
		return p
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw := make([]byte, SectorSize)
	if _, err := f.ReadAt(raw, 0); err != nil {
		t.Fatal(err)
	}
	h, err := parseSparseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := edit(f, h); err != nil {
		t.Fatal(err)
	}
	return p
}

// emptyBig is an empty 512 TiB extent: 2^20 absent grain tables.
func emptyBig(t *testing.T, dir string) string {
	p := filepath.Join(dir, "empty.vmdk")
	bigKDMV(t, p, nil, nil, 0)
	return p
}

// pastEndBig is 512 TiB whose one grain, at the far end, lies past the
// end of the file.
func pastEndBig(t *testing.T, dir string) string {
	gt := int64(gdEnd)
	p := filepath.Join(dir, "past.vmdk")
	bigKDMV(t, p, map[int]uint32{gd512TiB1M - 1: uint32(gt)},
		map[int64][]byte{gt * SectorSize: u32s(append(make([]uint32, gtes-1), uint32(gt+4))...)}, 0)
	return p
}

// sharedEmptyBig is 512 TiB whose 2^20 GD entries all name one written,
// empty table.
func sharedEmptyBig(t *testing.T, dir string) string {
	p := filepath.Join(dir, "shared-empty.vmdk")
	bigKDMV(t, p, nil, map[int64][]byte{SectorSize: u32s(repeat(gdEnd, gd512TiB1M)...),
		gdEnd * SectorSize: make([]byte, gtes*4)}, 0)
	return p
}

func kindName(m Mapping) string {
	switch {
	case m.NoAccess:
		return "noaccess"
	case m.Data && m.Zero:
		return "data-hole" // a flat extent over a hole of its file
	case m.Data:
		return "data"
	case m.Zero && m.Allocated:
		return "zero"
	}
	return fmt.Sprintf("hole@%d", m.Depth)
}

func TestHostileCost(t *testing.T) {
	grain := bytes.Repeat([]byte{0xcd}, grain1M*SectorSize)
	cases := []costCase{{
		name:  "empty 512 TiB, 2^20 absent grain tables",
		build: emptyBig,
		maps:  1, first: "hole@1", last: "hole@1",
		b: bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:  "qemu-img's largest: 64 TiB monolithicSparse, tables in holes, data at the end",
		build: func(t *testing.T, dir string) string { return qemu64T(t, dir, nil) },
		maps:  2, first: "hole@1", last: "data", pattern: 0xcd,
		// Its GD and redundant GD are 16 MiB each: what it allocates.
		b: bound{Time: 3 * time.Second, Mem: 48 << 20},
	}, {
		name: "ZERO extent line of 2^40 sectors",
		build: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "zero.vmdk")
			writeFile(t, p, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW %d ZERO\n", bigSectors)))
			return p
		},
		maps: 1, first: "zero", last: "zero",
		b: bound{Time: time.Second, Mem: 4 << 20},
	}, {
		name: "FLAT extent line of 15 TiB over a sparse file storing its last 64 KiB",
		build: func(t *testing.T, dir string) string {
			const size = int64(15) << 40
			sparseFile(t, filepath.Join(dir, "f-flat.vmdk"), size, map[int64][]byte{size - 64<<10: bytes.Repeat([]byte{0xcd}, 64<<10)})
			p := filepath.Join(dir, "f.vmdk")
			writeFile(t, p, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW %d FLAT \"f-flat.vmdk\" 0\n", size/SectorSize)))
			return p
		},
		maps: 2, first: "data-hole", last: "data", pattern: 0xcd,
		b: bound{Time: time.Second, Mem: 4 << 20},
	}, {
		name: "SPARSE extent line of 2^40 sectors, one grain at the far end",
		build: func(t *testing.T, dir string) string {
			gt := int64(gdEnd)
			at := gt + 4 // one 2 KiB table, then the grain
			bigKDMV(t, filepath.Join(dir, "far-s001.vmdk"), map[int]uint32{gd512TiB1M - 1: uint32(gt)},
				map[int64][]byte{gt * SectorSize: u32s(append(make([]uint32, gtes-1), uint32(at))...), at * SectorSize: grain}, 0)
			p := filepath.Join(dir, "far.vmdk")
			writeFile(t, p, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\nRW %d SPARSE \"far-s001.vmdk\"\n", bigSectors)))
			return p
		},
		maps: 2, first: "hole@1", last: "data", pattern: 0xcd,
		b: bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:  "COWD of 2^32-1 one-sector grains, one grain at the far end",
		build: func(t *testing.T, dir string) string { return cowdBig(t, dir, 0) },
		maps:  2, first: "hole@1", last: "data", pattern: 0xcd,
		b: bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name:  "every GD entry shares one empty table (written, not a hole)",
		build: sharedEmptyBig,
		maps:  1, first: "hole@1", last: "hole@1",
		b: bound{Time: time.Second, Mem: 12 << 20},
	}, {
		name: "2^16 GD entries share one table whose first grain is allocated",
		build: func(t *testing.T, dir string) string {
			// 2 TiB in 64 KiB grains: 2^16 tables, each a data grain then
			// a hole: 2^17 mappings that cannot merge (same host bytes).
			const n = 1 << 16
			gt := int64(1 + n*4/SectorSize)
			h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: n * gtes * 128, GrainSize: 128,
				NumGTEsPerGT: gtes, GDOffset: 1, OverHead: uint64(gt + 4)}
			table := make([]uint32, gtes)
			table[0] = uint32(gt + 4)
			p := filepath.Join(dir, "shared-one.vmdk")
			sparseFile(t, p, (gt+4+128)*SectorSize, map[int64][]byte{0: h.marshal(), SectorSize: u32s(repeat(uint32(gt), n)...),
				gt * SectorSize: u32s(table...), (gt + 4) * SectorSize: grain[:128*SectorSize]})
			return p
		},
		maps: 1 << 17, first: "data", last: "hole@1",
		// Streamed: Map's slice of 2^17 mappings alone would be ~11 MiB.
		b: bound{Time: time.Second, Mem: 2 << 20},
	}, {
		name: "empty 512 TiB child over an empty 512 TiB parent",
		build: func(t *testing.T, dir string) string {
			bigKDMV(t, filepath.Join(dir, "base-s.vmdk"), nil, nil, 0)
			bigKDMV(t, filepath.Join(dir, "top-s.vmdk"), nil, nil, 0)
			d := "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\ncreateType=\"twoGbMaxExtentSparse\"\n%sRW %d SPARSE \"%s\"\n"
			writeFile(t, filepath.Join(dir, "base.vmdk"), []byte(fmt.Sprintf(d, "0000000b", "ffffffff", "", bigSectors, "base-s.vmdk")))
			writeFile(t, filepath.Join(dir, "top.vmdk"), []byte(fmt.Sprintf(d, "0000000c", "0000000b", "parentFileNameHint=\"base.vmdk\"\n", bigSectors, "top-s.vmdk")))
			return filepath.Join(dir, "top.vmdk")
		},
		maps: 1, first: "hole@2", last: "hole@2",
		b: bound{Time: time.Second, Mem: 24 << 20},
	}, {
		name:  "512 TiB whose one grain, at the far end, lies past the end of the file",
		build: pastEndBig,
		want:  ErrCorrupt,
		b:     bound{Time: time.Second, Mem: 12 << 20},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.build(t, t.TempDir())
			var n int
			var first, last Mapping
			var data []byte
			err := withinBound(t, c.b, func() error {
				d, err := Open(path, Options{})
				if err != nil {
					return err
				}
				defer d.Close()
				err = d.MapEach(context.Background(), func(m Mapping) error {
					if n == 0 {
						first = m
					}
					last, n = m, n+1
					return nil
				})
				if err != nil || c.pattern == 0 {
					return err
				}
				data = make([]byte, min(64<<10, last.Length))
				_, err = d.ReadAt(data, last.Offset)
				return err
			})
			if !errors.Is(err, c.want) || (err != nil) != (c.want != nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want != nil {
				return
			}
			if n != c.maps || kindName(first) != c.first || kindName(last) != c.last {
				t.Fatalf("%d mappings, first %s %+v, last %s %+v; want %d, %s, %s", n, kindName(first), first, kindName(last), last, c.maps, c.first, c.last)
			}
			if c.pattern != 0 && !bytes.Equal(data, bytes.Repeat([]byte{c.pattern}, len(data))) {
				t.Fatalf("the data at byte %d does not read back", last.Offset)
			}
			if c.pattern != 0 {
				// qemu reads the same bytes there.
				dir, img := filepath.Split(path)
				out := sh(t, dir, "qemu-io", "-r", "-c", fmt.Sprintf("read -P %#x %d %d", c.pattern, last.Offset, len(data)), img)
				if !bytes.Contains(out, []byte(fmt.Sprintf("read %d/%d", len(data), len(data)))) || bytes.Contains(out, []byte("verification failed")) {
					t.Fatalf("qemu-io disagrees at byte %d:\n%s", last.Offset, out)
				}
			}
		})
	}
}

func repeat(v uint32, n int) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestHostileCostHoleTablesWritten: the hole shortcut never hides a write.
// qemu-img leaves a sparse image's grain tables as holes; a grain written
// into one must map and read back before the tables are flushed (they are
// then only in memory), after Flush (on disk, no longer a hole) and after
// reopening, and qemu must read it too.
func TestHostileCostHoleTablesWritten(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "h.vmdk", "4T")
	path := filepath.Join(dir, "h.vmdk")
	const at = int64(3)<<40 + 5<<20 // in a table far from the first
	data := bytes.Repeat([]byte{0x6b}, 64<<10)
	// want runs inside withinBound's goroutine: it returns what is wrong
	// rather than failing the test from there.
	want := func(d *Disk, when string) error {
		ms, err := d.Map(context.Background())
		if err != nil {
			return fmt.Errorf("%s: %w", when, err)
		}
		if len(ms) != 3 || !ms[1].Data || ms[1].Offset != at || ms[1].Length != int64(len(data)) {
			return fmt.Errorf("%s: map %+v, want data at [%d, +%d) only", when, ms, at, len(data))
		}
		got := make([]byte, len(data))
		if _, err := d.ReadAt(got, at); err != nil || !bytes.Equal(got, data) {
			return fmt.Errorf("%s: read back %v", when, err)
		}
		return nil
	}
	err := withinBound(t, bound{Time: 2 * time.Second, Mem: 16 << 20}, func() error {
		d, err := Open(path, Options{ReadWrite: true})
		if err != nil {
			return err
		}
		if _, err := d.WriteAt(data, at); err != nil {
			return err
		}
		if err := want(d, "before Flush"); err != nil {
			return err
		}
		if err := d.Flush(); err != nil {
			return err
		}
		if err := want(d, "after Flush"); err != nil {
			return err
		}
		if err := d.Close(); err != nil {
			return err
		}
		d, err = Open(path, Options{})
		if err != nil {
			return err
		}
		defer d.Close()
		return want(d, "reopened")
	})
	if err != nil {
		t.Fatal(err)
	}
	out := sh(t, dir, "qemu-io", "-r", "-c", fmt.Sprintf("read -P 0x6b %d 64k", at), "h.vmdk")
	if !bytes.Contains(out, []byte("read 65536/65536")) || bytes.Contains(out, []byte("verification failed")) {
		t.Fatalf("qemu-io disagrees:\n%s", out)
	}
}
