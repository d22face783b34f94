package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// The seSparse tests read files package vmdktest writes (nothing free
// writes seSparse) and hold every read to two oracles: the vmdktest Model
// of the chain's content and qemu-img convert of the same descriptor.

const seGrain = vmdktest.GrainSize

func seFill(b byte) []byte { return bytes.Repeat([]byte{b}, seGrain) }

// modelRaw is the whole content of a Model.
func modelRaw(t testing.TB, m *vmdktest.Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// seChain is a generated chain: its directory, top descriptor and model.
type seChain struct {
	dir, top string
	model    *vmdktest.Model
}

// seBaseAndDelta writes a thin vmfs base of size bytes of mixed content
// and one seSparse delta over it holding grains.
func seBaseAndDelta(t testing.TB, size int64, grains []vmdktest.Grain, o vmdktest.SESparseOptions) seChain {
	t.Helper()
	dir := t.TempDir()
	base := vmdktest.MixedContent(uint64(size), size)
	cid, err := vmdktest.WriteVMFSBase(dir, "vm", base, size, vmdktest.VMFSOptions{Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, o); err != nil {
		t.Fatal(err)
	}
	return seChain{dir: dir, top: "vm-000001.vmdk", model: &vmdktest.Model{
		Size: size, Base: base, BaseSize: size, Layers: []vmdktest.Layer{vmdktest.LayerOf(grains)},
	}}
}

// everyKind is a delta's grains of every kind, given out of disk order,
// in the first and third 16 MiB of the disk (the second is a GD hole),
// with the disk's last grain and grains of the third grain table (those
// a smaller disk has).
func everyKind(size int64) []vmdktest.Grain {
	last := (size - 1) / seGrain
	var in []vmdktest.Grain
	for _, g := range []vmdktest.Grain{
		{Index: last, Data: seFill(0xee)},
		{Index: 3, Data: seFill(0x33)},
		{Index: 4, Kind: vmdktest.Zero},
		{Index: 5, Kind: vmdktest.Unmapped},
		{Index: 6, Data: seFill(0x66)}, // stored after grain 3's neighbour: not contiguous
		{Index: 7, Data: seFill(0x77)},
		{Index: 0, Data: []byte("short grain")},
		{Index: 8, Data: seFill(0x88)}, // beside grain 7 on the disk, not in the file
		{Index: 2*4096 + 1, Data: seFill(0x41)},
		{Index: 2*4096 + 2, Kind: vmdktest.Zero},
		{Index: last - 1, Kind: vmdktest.Unmapped},
	} {
		if g.Index <= last && !slices.ContainsFunc(in, func(h vmdktest.Grain) bool { return h.Index == g.Index }) {
			in = append(in, g)
		}
	}
	return in
}

// TestSESparseReads reads generated seSparse chains byte for byte as the
// model and as qemu-img say.
func TestSESparseReads(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name string
		size int64
		o    vmdktest.SESparseOptions
	}{
		{"every-kind-48MiB", 48 * mib, vmdktest.SESparseOptions{}},
		{"index-0x1001", 48 * mib, vmdktest.SESparseOptions{FirstGrainIndex: 0x1001}},
		{"100MiB+4KiB", 100*mib + 4096, vmdktest.SESparseOptions{FirstGrainIndex: 5000}},
		{"partial-grain-40MiB+1536", 40*mib + 1536, vmdktest.SESparseOptions{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch := seBaseAndDelta(t, c.size, everyKind(c.size), c.o)
			d := mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
			got := readAll(t, d)
			sameBytes(t, "vmdk vs model", got, modelRaw(t, ch.model))
			sameBytes(t, "vmdk vs qemu-img", got, qemuRaw(t, ch.dir, ch.top))
			if d.Size() != c.size {
				t.Errorf("size %d, want %d", d.Size(), c.size)
			}
		})
	}
}

// TestSESparseReserved1: real deltas with reserved1 = 0x200 read as the
// model says; qemu refuses them (which the test documents).
func TestSESparseReserved1(t *testing.T) {
	const size = 20 << 20
	ch := seBaseAndDelta(t, size, everyKind(size), vmdktest.SESparseOptions{Reserved1: 0x200})
	d := mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
	sameBytes(t, "vmdk vs model", readAll(t, d), modelRaw(t, ch.model))
	out := filepath.Join(t.TempDir(), "q.raw")
	msg, err := exec.Command(tool(t, "qemu-img"), "convert", "-f", "vmdk", "-O", "raw", filepath.Join(ch.dir, ch.top), out).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "Unsupported reserved bits") {
		t.Fatalf("qemu-img was expected to refuse reserved1 = 0x200: %v %s", err, msg)
	}
}

// TestSESparseChains: two seSparse levels over a vmfs base, and a
// vmfsSparse snapshot under seSparse ones (a VM moved from VMFS5 to
// VMFS6), read as the model and qemu-img say, from every level.
func TestSESparseChains(t *testing.T) {
	for _, o := range []vmdktest.ChainOptions{{Deltas: 2, Seed: 3}, {Deltas: 3, Seed: 4, VMFSSparse: true}} {
		t.Run(fmt.Sprintf("deltas%d-vmfssparse%v", o.Deltas, o.VMFSSparse), func(t *testing.T) {
			dir := t.TempDir()
			const size = 40<<20 + 4096
			c, err := vmdktest.WriteESXiChain(dir, "vm", size, o)
			if err != nil {
				t.Fatal(err)
			}
			for level := o.Deltas; level >= 1; level-- {
				top := fmt.Sprintf("vm-%06d.vmdk", level)
				m := *c.Model
				m.Layers = m.Layers[:level]
				// Size, CID, parentCID and createType as qemu-img info says.
				d := checkAgainstQemu(t, dir, top, Options{})
				sameBytes(t, top+" vs model", readAll(t, d), modelRaw(t, &m))
				if n := d.chainLength(); n != level+1 {
					t.Errorf("%s: chain of %d disks, want %d", top, n, level+1)
				}
				if f := d.Extents()[0].Format; f != "seSparse" && !(o.VMFSSparse && level == 1) {
					t.Errorf("%s: extent format %q", top, f)
				}
				d.Close()
			}
		})
	}
}

// TestSESparseBareRefused: a seSparse file opened by itself is a delta
// without its parent; reading it alone would be silently wrong.
func TestSESparseBareRefused(t *testing.T) {
	ch := seBaseAndDelta(t, 1<<20, everyKind(1<<20), vmdktest.SESparseOptions{})
	_, err := Open(filepath.Join(ch.dir, "vm-000001-sesparse.vmdk"), Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "open its descriptor") {
		t.Fatalf("bare seSparse: %v", err)
	}
}

// TestSESparseDirty: an unreplayed journal is refused by Open and reported
// by Check.
func TestSESparseDirty(t *testing.T) {
	ch := seBaseAndDelta(t, 1<<20, everyKind(1<<20), vmdktest.SESparseOptions{Dirty: true})
	top := filepath.Join(ch.dir, ch.top)
	_, err := Open(top, Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "not closed cleanly (unreplayed journal)") {
		t.Fatalf("dirty delta: %v", err)
	}
	r, err := Check(context.Background(), top, CheckOptions{})
	if err != nil || len(r.Corruptions) != 1 || !strings.Contains(r.Corruptions[0], "unreplayed journal") {
		t.Fatalf("Check of a dirty delta: %v %+v", err, r)
	}
}

// seField is the byte offset of const header field i (u64s: magic,
// version, capacity, grain size, table size, flags, reserved1-4, then the
// offset/size pairs of volatile header, journal header, journal, GD, GTs,
// free bitmap, backmap, grains).
func seField(i int) int64 { return int64(i) * 8 }

const (
	seFieldVersion, seFieldCapacity, seFieldGrain, seFieldGT, seFieldFlags = 1, 2, 3, 4, 5
	seFieldVolatile, seFieldJournal, seFieldGD, seFieldGTs                 = 10, 14, 16, 18
	seFieldBackmap, seFieldGrains                                          = 22, 24
)

func readU64(t testing.TB, path string, off int64) uint64 {
	t.Helper()
	b := make([]byte, 8)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b)
}

func writeU64(t testing.TB, path string, off int64, v uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(binary.LittleEndian.AppendUint64(nil, v), off); err != nil {
		t.Fatal(err)
	}
}

// TestSESparseCorrupt: each bad field of a generated delta is ErrCorrupt
// (or ErrUnsupported for what a later version may define), from Open or
// from the read that meets it, and never a panic; Check reports it.
func TestSESparseCorrupt(t *testing.T) {
	const size = 20 << 20
	grains := []vmdktest.Grain{{Index: 3, Data: seFill(3)}, {Index: 4, Data: seFill(4)}, {Index: 4096 + 9, Kind: vmdktest.Zero}}
	// Grains 3 and 4 are stored at indexes 0 and 1.
	gte := func(ext string, g int64) int64 { return seGTEOffset(t, ext, g) }
	gdEntry := func(ext string, i int64) int64 { return int64(readU64(t, ext, seField(seFieldGD)))*SectorSize + i*8 }
	for _, c := range []struct {
		name   string
		patch  func(ext string)
		want   error
		atOpen bool
	}{
		{"magic", func(ext string) { writeU64(t, ext, 0, 0xcafebabf) }, ErrNotVMDK, true},
		{"version", func(ext string) { writeU64(t, ext, seField(seFieldVersion), 0x0000000300000001) }, ErrUnsupported, true},
		{"grain-size", func(ext string) { writeU64(t, ext, seField(seFieldGrain), 16) }, ErrCorrupt, true},
		{"table-size", func(ext string) { writeU64(t, ext, seField(seFieldGT), 128) }, ErrCorrupt, true},
		{"flags", func(ext string) { writeU64(t, ext, seField(seFieldFlags), 1) }, ErrUnsupported, true},
		{"capacity-zero", func(ext string) { writeU64(t, ext, seField(seFieldCapacity), 0) }, ErrCorrupt, true},
		{"capacity-huge", func(ext string) { writeU64(t, ext, seField(seFieldCapacity), 1<<62) }, ErrCorrupt, true},
		{"gd-too-small", func(ext string) { // 4 GiB needs 256 entries: 4 sectors
			writeU64(t, ext, seField(seFieldCapacity), 4<<30/SectorSize)
			writeU64(t, ext, seField(seFieldGD)+8, 1)
		}, ErrCorrupt, true},
		{"volatile-magic", func(ext string) { writeU64(t, ext, SectorSize, 0xcafecafd) }, ErrCorrupt, true},
		{"volatile-past-file", func(ext string) { writeU64(t, ext, seField(seFieldVolatile), 1<<30) }, ErrCorrupt, true},
		// Areas nothing reads, so only the overlap checks can see them.
		{"backmap-overlaps-grains", func(ext string) {
			writeU64(t, ext, seField(seFieldBackmap), readU64(t, ext, seField(seFieldGrains))+8)
		}, ErrCorrupt, true},
		{"journal-overlaps-header", func(ext string) {
			writeU64(t, ext, seField(seFieldJournal), 0)
			writeU64(t, ext, seField(seFieldJournal)+8, 1)
		}, ErrCorrupt, true},
		{"gd-past-file", func(ext string) { writeU64(t, ext, seField(seFieldGD), 1<<32) }, ErrCorrupt, true},
		{"gd-offset-overflow", func(ext string) { writeU64(t, ext, seField(seFieldGD), 1<<63) }, ErrCorrupt, true},
		{"gd-empty", func(ext string) { writeU64(t, ext, seField(seFieldGD)+8, 0) }, ErrCorrupt, true},
		{"grains-empty", func(ext string) { writeU64(t, ext, seField(seFieldGrains)+8, 0) }, ErrCorrupt, true},
		{"gd-high-bits", func(ext string) { writeU64(t, ext, gdEntry(ext, 0), 0x1000000100000000) }, ErrCorrupt, true},
		{"gd-table-past-area", func(ext string) { writeU64(t, ext, gdEntry(ext, 1), 0x1000000000000000|2048) }, ErrCorrupt, true},
		{"gts-past-file", func(ext string) {
			writeU64(t, ext, seField(seFieldGTs), readU64(t, ext, seField(seFieldGrains))+1<<20)
			writeU64(t, ext, seField(seFieldGTs)+8, 1<<20)
		}, ErrCorrupt, false},
		// Grain 4 is stored at index 1, in the file but outside an area of one grain.
		{"grain-past-area", func(ext string) { writeU64(t, ext, seField(seFieldGrains)+8, 8) }, ErrCorrupt, false},
		{"grain-index-huge", func(ext string) { writeU64(t, ext, gte(ext, 3), 0x3000000000000000|1<<40) }, ErrCorrupt, false},
		{"grain-past-file", func(ext string) { writeU64(t, ext, gte(ext, 3), 0x3000000000000000|1) }, ErrCorrupt, false},
		{"grain-type-4", func(ext string) { writeU64(t, ext, gte(ext, 4), 0x4000000000000000) }, ErrCorrupt, false},
		{"grain-type-f", func(ext string) { writeU64(t, ext, gte(ext, 4), 0xf000000000000001) }, ErrCorrupt, false},
		{"unallocated-with-bits", func(ext string) { writeU64(t, ext, gte(ext, 5), 0x0000000000000100) }, ErrCorrupt, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch := seBaseAndDelta(t, size, grains, vmdktest.SESparseOptions{})
			ext, top := filepath.Join(ch.dir, "vm-000001-sesparse.vmdk"), filepath.Join(ch.dir, ch.top)
			c.patch(ext)
			d, err := Open(top, Options{})
			if c.atOpen {
				if !errors.Is(err, c.want) {
					t.Fatalf("Open: %v, want %v", err, c.want)
				}
			} else {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer d.Close()
				_, err = d.ReadAt(make([]byte, size), 0)
				if !errors.Is(err, c.want) {
					t.Fatalf("read: %v, want %v", err, c.want)
				}
				if !strings.Contains(err.Error(), "vm-000001-sesparse.vmdk") {
					t.Errorf("error does not name the file: %v", err)
				}
			}
			if c.want == ErrCorrupt {
				r, err := Check(context.Background(), top, CheckOptions{})
				if err != nil || len(r.Corruptions) == 0 {
					t.Fatalf("Check: %v, %+v", err, r)
				}
			}
		})
	}
}

// TestSESparseLine: the extent line places the extent (fitSparseLine): a
// line longer than the header's capacity is corrupt, a shorter one reads
// as the line says.
func TestSESparseLine(t *testing.T) {
	const size = 20 << 20
	ch := seBaseAndDelta(t, size, everyKind(size), vmdktest.SESparseOptions{})
	top := filepath.Join(ch.dir, ch.top)
	desc := string(readFileT(t, top))
	line := fmt.Sprintf("RW %d SESPARSE", size/SectorSize)
	for _, c := range []struct {
		sectors int64
		want    error
	}{{size/SectorSize + 8, ErrCorrupt}, {size/SectorSize - 8, nil}} {
		writeFile(t, top, []byte(strings.Replace(desc, line, fmt.Sprintf("RW %d SESPARSE", c.sectors), 1)))
		d, err := Open(top, Options{})
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Fatalf("line of %d sectors: %v, want %v", c.sectors, err, c.want)
		}
		if err == nil {
			sameBytes(t, "short line", readAll(t, d), modelRaw(t, ch.model)[:c.sectors*SectorSize])
			d.Close()
			r, err := Check(context.Background(), top, CheckOptions{})
			if err != nil || len(r.Corruptions) != 1 || !strings.Contains(r.Corruptions[0], "header's capacity is") {
				t.Fatalf("Check of a short line: %v %q", err, r.Corruptions)
			}
		}
	}
}
