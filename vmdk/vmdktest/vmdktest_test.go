package vmdktest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// qemu-img is the independent reader these tests hold the writers to. The
// tests fail, never skip, without it (Debian qemu-utils; .ci/run installs it).
func qemuRaw(t *testing.T, dir, img string) []byte {
	t.Helper()
	out, err := qemuConvert(dir, img)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func qemuConvert(dir, img string) ([]byte, error) {
	out := filepath.Join(dir, "qemu-out.raw")
	defer os.Remove(out)
	cmd := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, out)
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img convert %s: %v: %s", img, err, msg)
	}
	return os.ReadFile(out)
}

func modelBytes(t *testing.T, m *Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if int64(b.Len()) != m.Size {
		t.Fatalf("model wrote %d bytes, size %d", b.Len(), m.Size)
	}
	return b.Bytes()
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d (grain %d): %#x, want %#x", what, i, i/GrainSize, got[i], want[i])
		}
	}
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, GrainSize) }

// deltaGrains has every kind of grain, given out of disk order so storage
// order and table numbering differ from disk order, over two of three
// 16 MiB ranges (the middle one is a GD hole), the last grain partial.
func deltaGrains(size int64) []Grain {
	last := (size - 1) / GrainSize
	return []Grain{
		{Index: last, Data: fill(0xee)},
		{Index: 3, Data: fill(0x33)},
		{Index: 4, Kind: Zero},
		{Index: 5, Kind: Unmapped},
		{Index: 0, Data: []byte("short grain: the rest reads as zeros")},
		{Index: 4097, Data: fill(0x41)}, // second table, entry 1
		{Index: last - 1, Kind: Zero},
	}
}

// TestSESparseOverVMFSMatchesQemu: a thin vmfs base under a seSparse
// delta with every grain kind, a GD hole, a capacity of 32 MiB + 4 KiB and
// stored grain indexes from 0x1001 reads in qemu as the Model says.
func TestSESparseOverVMFSMatchesQemu(t *testing.T) {
	dir := t.TempDir()
	const size = 32<<20 + 4096
	base := MixedContent(7, size)
	cid, err := WriteVMFSBase(dir, "vm", base, size, VMFSOptions{Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	grains := deltaGrains(size)
	if _, err := WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, SESparseOptions{FirstGrainIndex: 0x1001}); err != nil {
		t.Fatal(err)
	}
	m := &Model{Size: size, Base: base, BaseSize: size, Layers: []Layer{LayerOf(grains)}}
	want := modelBytes(t, m)
	sameBytes(t, "qemu vs model", qemuRaw(t, dir, "vm-000001.vmdk"), want)
	// The model is not the base: the delta's grains are in it.
	if bytes.Equal(want[3*GrainSize:4*GrainSize], fill(0x33)) == false || !bytes.Equal(want[4*GrainSize:6*GrainSize], make([]byte, 2*GrainSize)) {
		t.Fatal("model lost the delta's grains")
	}
	sameBytes(t, "qemu base vs content", qemuRaw(t, dir, "vm.vmdk"), modelBytes(t, &Model{Size: size, Base: base, BaseSize: size}))
}

// TestSESparseLayout: a 100 MiB delta is laid out as ESXi lays one out.
func TestSESparseLayout(t *testing.T) {
	l := seSparseLayout(100<<20, 0)
	want := seLayout{
		VolatileHeader: [2]int64{1, 1}, JournalHeader: [2]int64{2, 2}, Journal: [2]int64{2048, 2048},
		GrainDirectory: [2]int64{4096, 2048}, GrainTables: [2]int64{6144, 2048}, FreeBitmap: [2]int64{8192, 2048},
		Backmap: [2]int64{10240, 2048}, Grains: [2]int64{12288, 204800},
	}
	if l != want {
		t.Fatalf("layout %+v, want %+v", l, want)
	}
}

// TestSESparseEntries: the stored index 0x1001 is split across the GT
// entry's two fields, and GD entries number tables in first-touch order.
func TestSESparseEntries(t *testing.T) {
	dir := t.TempDir()
	grains := []Grain{{Index: 5000, Data: fill(1)}, {Index: 2, Kind: Zero}, {Index: 3, Kind: Unmapped}}
	if _, err := WriteSESparseDelta(dir, "d", "p.vmdk", 1, 64<<20, grains, SESparseOptions{FirstGrainIndex: 0x1001}); err != nil {
		t.Fatal(err)
	}
	f, err := os.ReadFile(filepath.Join(dir, "d-sesparse.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	u64 := func(off int64) uint64 { return le.Uint64(f[off:]) }
	gd, gts, grainsAt := int64(u64(8*16))*512, int64(u64(8*18))*512, int64(u64(8*24))*512
	if u64(0) != seSparseConstMagic || u64(8) != seSparseVersion || u64(16) != 64<<20/512 {
		t.Fatalf("const header %x %x %d", u64(0), u64(8), u64(16))
	}
	// Grain 5000 is in GD entry 1, touched first: table 0; grains 2 and
	// 3 are in GD entry 0: table 1; GD entry 2 is a hole.
	if u64(gd) != 0x1000000000000001 || u64(gd+8) != 0x1000000000000000 || u64(gd+16) != 0 {
		t.Fatalf("GD entries %x %x %x", u64(gd), u64(gd+8), u64(gd+16))
	}
	if e := u64(gts + (5000-4096)*8); e != 0x3001000000000001 {
		t.Fatalf("GT entry of stored grain 0x1001 is %#x", e)
	}
	t1 := gts + 64*512
	if u64(t1+16) != 0x2000000000000000 || u64(t1+24) != 0x1000000000000000 {
		t.Fatalf("zero/unmapped entries %#x %#x", u64(t1+16), u64(t1+24))
	}
	if !bytes.Equal(f[grainsAt+0x1001*GrainSize:][:GrainSize], fill(1)) {
		t.Fatal("grain data not at grains_offset + 0x1001*8 sectors")
	}
}

// TestESXiChainMatchesQemu: WriteESXiChain's chains (vmfsSparse under
// seSparse, and seSparse only) read in qemu as their Model says, and the
// Model of each delta differs from its parent's.
func TestESXiChainMatchesQemu(t *testing.T) {
	for _, o := range []ChainOptions{{Deltas: 3, Seed: 1, VMFSSparse: true}, {Deltas: 2, Seed: 2}} {
		t.Run(fmt.Sprintf("deltas%d-vmfssparse%v", o.Deltas, o.VMFSSparse), func(t *testing.T) {
			dir := t.TempDir()
			const size = 48<<20 + 512 // three tables and a partial grain
			c, err := WriteESXiChain(dir, "vm", size, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Files) != 2+2*o.Deltas || filepath.Base(c.Top) != fmt.Sprintf("vm-%06d.vmdk", o.Deltas) {
				t.Fatalf("files %v, top %s", c.Files, c.Top)
			}
			for _, f := range c.Files {
				if _, err := os.Stat(f); err != nil {
					t.Fatal(err)
				}
			}
			if holes := gdHoles(t, c.Files[len(c.Files)-1], size); holes == 0 || holes == 3 {
				t.Fatalf("top delta has %d GD holes in its 3 full entries: want some, not all", holes)
			}
			want := modelBytes(t, c.Model)
			sameBytes(t, "qemu vs model", qemuRaw(t, dir, filepath.Base(c.Top)), want)
			below := *c.Model
			below.Layers = below.Layers[:len(below.Layers)-1]
			if bytes.Equal(modelBytes(t, &below), want) {
				t.Fatal("the top delta changes nothing")
			}
		})
	}
}

// TestVMFSSparseSmallGrains: a COWD delta of 1-sector grains (each Grain
// stored as eight) over a version 3 base reads in qemu as the Model says.
func TestVMFSSparseSmallGrains(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 1536
	base := MixedContent(3, size)
	cid, err := WriteVMFSBase(dir, "vm", base, size, VMFSOptions{Version: 3})
	if err != nil {
		t.Fatal(err)
	}
	desc, _ := os.ReadFile(filepath.Join(dir, "vm.vmdk"))
	if !bytes.Contains(desc, []byte(`changeTrackPath="vm-ctk.vmdk"`)) || !bytes.Contains(desc, []byte("version=3")) {
		t.Fatalf("version 3 descriptor:\n%s", desc)
	}
	last := int64(size-1) / GrainSize
	grains := []Grain{{Index: last, Data: fill(9)}, {Index: 1, Data: []byte("one")}, {Index: 100, Data: fill(7)}}
	if _, err := WriteVMFSSparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, VMFSSparseOptions{GrainSectors: 1}); err != nil {
		t.Fatal(err)
	}
	m := &Model{Size: size, Base: base, BaseSize: size, Layers: []Layer{LayerOf(grains)}}
	sameBytes(t, "qemu vs model", qemuRaw(t, dir, "vm-000001.vmdk"), modelBytes(t, m))
	if _, err := WriteVMFSSparseDelta(dir, "bad", "vm.vmdk", cid, size, []Grain{{Index: 1, Kind: Zero}}, VMFSSparseOptions{}); err == nil {
		t.Fatal("a Zero grain in a COWD delta was accepted")
	}
}

// TestQemuRefuses: qemu refuses a dirty delta and one with reserved1 set
// (real images have 0x200 there): what these options are for is a reader
// that must tell them apart.
func TestQemuRefuses(t *testing.T) {
	for _, c := range []struct {
		o    SESparseOptions
		want string
	}{{SESparseOptions{Dirty: true}, "journal"}, {SESparseOptions{Reserved1: 0x200}, "reserved"}} {
		dir := t.TempDir()
		cid, err := WriteVMFSBase(dir, "vm", nil, 1<<20, VMFSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, 1<<20, []Grain{{Index: 1, Data: fill(1)}}, c.o); err != nil {
			t.Fatal(err)
		}
		_, err = qemuConvert(dir, "vm-000001.vmdk")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: qemu says %v, want an error about %q", c.o, err, c.want)
		}
	}
}

// TestThinBaseHasHoles: a thin base leaves zero content unallocated.
func TestThinBaseHasHoles(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	content := &Model{Size: size, Layers: []Layer{LayerOf([]Grain{{Index: 1000, Data: fill(5)}})}}
	if _, err := WriteVMFSBase(dir, "thin", content, size, VMFSOptions{Thin: true}); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "thin-flat.vmdk"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 > 2<<20 {
		t.Fatalf("thin flat file: %d bytes, %d allocated", st.Size, st.Blocks*512)
	}
	desc, _ := os.ReadFile(filepath.Join(dir, "thin.vmdk"))
	if !bytes.Contains(desc, []byte(`ddb.thinProvisioned = "1"`)) || !bytes.Contains(desc, []byte(`RW 32768 VMFS "thin-flat.vmdk"`)) {
		t.Fatalf("descriptor:\n%s", desc)
	}
	sameBytes(t, "qemu vs content", qemuRaw(t, dir, "thin.vmdk"), modelBytes(t, content))
}

// TestWritersRefuse: grains a delta cannot hold are errors, not files.
func TestWritersRefuse(t *testing.T) {
	dir := t.TempDir()
	for _, g := range [][]Grain{
		{{Index: 256}},                            // past a 1 MiB capacity
		{{Index: 1}, {Index: 1, Kind: Zero}},      // twice
		{{Index: 1, Kind: Zero, Data: []byte{1}}}, // data on a zero grain
		{{Index: 1, Data: make([]byte, GrainSize+1)}},
	} {
		if _, err := WriteSESparseDelta(dir, "d", "p.vmdk", 1, 1<<20, g, SESparseOptions{}); err == nil {
			t.Errorf("%+v accepted", g)
		}
	}
}

// gdHoles counts the GD entries without a table among those covering a
// whole 16 MiB of a seSparse extent of size bytes.
func gdHoles(t *testing.T, path string, size int64) int {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gd := int64(binary.LittleEndian.Uint64(f[8*16:])) * SectorSize
	n := 0
	for i := int64(0); i < size/seTableSpan; i++ {
		if binary.LittleEndian.Uint64(f[gd+8*i:]) == 0 {
			n++
		}
	}
	return n
}

// TestESXiChainScattered: a Scattered chain reads in qemu as the same
// chain stored in order does, but its deltas store the grains elsewhere
// (shuffled, as a guest writing at random leaves them).
func TestESXiChainScattered(t *testing.T) {
	const size = 32<<20 + 512
	inOrder, scattered := t.TempDir(), t.TempDir()
	o := ChainOptions{Deltas: 2, Seed: 5, VMFSSparse: true}
	a, err := WriteESXiChain(inOrder, "vm", size, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Scattered = true
	b, err := WriteESXiChain(scattered, "vm", size, o)
	if err != nil {
		t.Fatal(err)
	}
	want := modelBytes(t, a.Model)
	sameBytes(t, "scattered model vs in order", modelBytes(t, b.Model), want)
	sameBytes(t, "qemu vs model", qemuRaw(t, scattered, filepath.Base(b.Top)), want)
	for i := 2; i < len(a.Files); i += 2 { // each delta's extent
		x, _ := os.ReadFile(a.Files[i+1])
		y, _ := os.ReadFile(b.Files[i+1])
		if len(x) != len(y) || bytes.Equal(x, y) {
			t.Fatalf("%s: %d bytes scattered, %d in order, equal %v: want the same size, other bytes", filepath.Base(b.Files[i+1]), len(y), len(x), bytes.Equal(x, y))
		}
	}
}
