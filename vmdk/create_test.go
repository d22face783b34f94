package vmdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestCreateAllSubformats: every subformat and option we create passes
// qemu-img check, reads the same in qemu-img info, and after random writes
// through WriterAt equals an in-memory model by qemu-img compare.
func TestCreateAllSubformats(t *testing.T) {
	for _, c := range []CreateOptions{
		{Subformat: MonolithicSparse},
		{Subformat: MonolithicSparse, ZeroedGrains: true, ImageOptions: ImageOptions{AdapterType: "lsilogic", HWVersion: "10"}},
		{Subformat: MonolithicFlat, ImageOptions: ImageOptions{AdapterType: "pvscsi"}},
		{Subformat: TwoGbMaxExtentSparse},
		{Subformat: TwoGbMaxExtentFlat, ImageOptions: ImageOptions{AdapterType: "buslogic"}},
		{Subformat: MonolithicSparse, ImageOptions: ImageOptions{GrainSize: 8 << 10}},
	} {
		name := fmt.Sprintf("%s-z%v-g%d", c.Subformat, c.ZeroedGrains, c.GrainSize)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c.Size = 5<<20 + 7*512
			p := filepath.Join(dir, "d.vmdk")
			if err := Create(p, c); err != nil {
				t.Fatal(err)
			}
			sh(t, dir, "qemu-img", "check", "-f", "vmdk", "d.vmdk")
			d := mustOpen(t, p, Options{ReadWrite: true})
			info := qemuImgInfo(t, dir, "d.vmdk")
			if info.VirtualSize != c.Size || info.FormatSpecific.Data.CreateType != string(c.Subformat) || info.FormatSpecific.Data.CID != d.CID() {
				t.Fatalf("qemu-img info %+v, we have CID %08x", info, d.CID())
			}
			model := make([]byte, c.Size)
			r := rand.New(rand.NewSource(int64(len(name))))
			randomWrites(t, r, d, model, 40)
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "our read after writes", readAll(t, d), model)
			d.Close()
			writeFile(t, filepath.Join(dir, "model.raw"), model)
			sh(t, dir, "qemu-img", "check", "-f", "vmdk", "d.vmdk")
			sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "d.vmdk", "model.raw")
		})
	}
}

func TestCreateRefusals(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	if err := Create(base, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "notvmdk.img"), []byte("hello"))
	for name, c := range map[string]CreateOptions{
		"flat+backing":     {Subformat: MonolithicFlat, Backing: base},
		"flat+zeroed":      {Subformat: TwoGbMaxExtentFlat, ZeroedGrains: true, ImageOptions: ImageOptions{Size: 1 << 20}},
		"backing-not-vmdk": {Backing: filepath.Join(dir, "notvmdk.img")},
		"bad-subformat":    {Subformat: "qcow2", ImageOptions: ImageOptions{Size: 1 << 20}},
		"bad-adapter":      {ImageOptions: ImageOptions{Size: 1 << 20, AdapterType: "scsi9"}},
		"no-size":          {},
		"too-big":          {ImageOptions: ImageOptions{Size: 3 << 40}},
	} {
		if err := Create(filepath.Join(dir, name+".vmdk"), c); err == nil {
			t.Errorf("%s: created", name)
		}
	}
	if err := Create(base, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}}); err == nil {
		t.Error("overwrote an existing image")
	}
	if _, err := mustOpen(t, base, Options{}).WriteAt([]byte("x"), 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to a read-only open: %v", err)
	}
}

var allSubformats = []Subformat{MonolithicSparse, MonolithicFlat, TwoGbMaxExtentSparse, TwoGbMaxExtentFlat, StreamOptimized}

// TestMaxSize: Create accepts exactly MaxSize for every subformat it can
// afford to write here, and refuses MaxSize+512 (and MaxSize+1, which
// rounds up to it) before writing anything.
func TestMaxSize(t *testing.T) {
	want := map[Subformat]int64{
		MonolithicSparse:     2198754230272,     // 2 TiB less 256.56 MiB of tables
		StreamOptimized:      2198754230272,     // the same extent format
		TwoGbMaxExtentSparse: 999 << 31,         // 999 extents of 2 GiB
		TwoGbMaxExtentFlat:   62 << 40,          // VMware's limit
		MonolithicFlat:       (1<<32 - 1) << 12, // ext4, 4 KiB blocks
	}
	for _, sf := range allSubformats {
		if got := MaxSize(sf); got != want[sf] || got%SectorSize != 0 {
			t.Errorf("MaxSize(%s) = %d, want %d (a multiple of %d)", sf, got, want[sf], SectorSize)
		}
	}
	if MaxSize("vmfsSparse") != 0 {
		t.Error("MaxSize of an unknown subformat is not 0")
	}

	for _, sf := range allSubformats {
		t.Run(string(sf), func(t *testing.T) {
			dir := t.TempDir()
			for _, size := range []int64{MaxSize(sf) + 1, MaxSize(sf) + SectorSize} {
				err := Create(filepath.Join(dir, "over.vmdk"), CreateOptions{Subformat: sf, ImageOptions: ImageOptions{Size: size}})
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "at most") {
					t.Errorf("Create(%d bytes) = %v, want ErrUnsupported naming the limit", size, err)
				}
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Fatalf("a refused Create left %d files", len(left))
			}
			switch sf {
			case TwoGbMaxExtentFlat:
				return // 31744 extent files: too many to write in a unit test
			case TwoGbMaxExtentSparse:
				if testing.Short() {
					return // 999 extent files
				}
			}
			p := filepath.Join(dir, "max.vmdk")
			err := Create(p, CreateOptions{Subformat: sf, ImageOptions: ImageOptions{Size: MaxSize(sf)}})
			if sf == MonolithicFlat && errors.Is(err, syscall.EFBIG) {
				t.Skipf("this filesystem holds smaller files than ext4 with 4 KiB blocks: %v", err)
			}
			if err != nil {
				t.Fatalf("Create at MaxSize: %v", err)
			}
			if d := mustOpen(t, p, Options{}); d.Size() != MaxSize(sf) {
				t.Fatalf("size %d, want %d", d.Size(), MaxSize(sf))
			}
		})
	}
}

// TestMaxSizeSparseLayout: MaxSize is exactly where writeSparseExtent's
// own 2^32-sector check starts refusing, with the embedded descriptor, and
// qemu-img reads the largest image.
func TestMaxSizeSparseLayout(t *testing.T) {
	sectors := MaxSize(MonolithicSparse) / SectorSize
	if full := sparseExtentSectors(sectors, defaultGrainSectors, descriptorSectors); full > math.MaxUint32 {
		t.Fatalf("at MaxSize the extent is %d sectors", full)
	}
	if full := sparseExtentSectors(sectors+1, defaultGrainSectors, descriptorSectors); full <= math.MaxUint32 {
		t.Fatalf("one sector past MaxSize the extent is %d sectors, still addressable", full)
	}
	o := CreateOptions{ImageOptions: ImageOptions{Size: 1}}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		sectors int64
		ok      bool
	}{{sectors, true}, {sectors + 1, false}} {
		f, err := os.Create(filepath.Join(dir, "extent"))
		if err != nil {
			t.Fatal(err)
		}
		err = writeSparseExtent(f, c.sectors, &o, make([]byte, descriptorSectors*SectorSize))
		f.Close()
		if (err == nil) != c.ok {
			t.Errorf("writeSparseExtent(%d sectors) = %v", c.sectors, err)
		}
	}

	p := filepath.Join(dir, "max.vmdk")
	if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: MaxSize(MonolithicSparse)}}); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, dir, "qemu-img", "info", "--output=json", "max.vmdk"); !strings.Contains(string(out), `"virtual-size": 2198754230272`) {
		t.Fatalf("qemu-img info: %s", out)
	}
	sh(t, dir, "qemu-img", "check", "max.vmdk")
}

// TestAdapterTypes: every adapter type AdapterTypes lists is one Create
// accepts and records, others are refused, and the list is a copy.
func TestAdapterTypes(t *testing.T) {
	types := AdapterTypes()
	if len(types) == 0 || !slices.Contains(types, "pvscsi") {
		t.Fatalf("AdapterTypes() = %v", types)
	}
	types[0] = "changed"
	if AdapterTypes()[0] == "changed" {
		t.Fatal("AdapterTypes returned its own slice")
	}
	dir := t.TempDir()
	for _, a := range AdapterTypes() {
		p := filepath.Join(dir, a+".vmdk")
		if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, AdapterType: a}}); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if got := mustOpen(t, p, Options{}).Descriptor().DDBValue("ddb.adapterType"); got != a {
			t.Errorf("ddb.adapterType %q, want %q", got, a)
		}
	}
	err := Create(filepath.Join(dir, "bad.vmdk"), CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, AdapterType: "scsi9"}})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("an unknown adapter type: %v", err)
	}
}

// TestInvalidOptions: every bad option value wraps ErrInvalidOptions
// (and ErrUnsupported where it did before), misuse of a Disk or a
// StreamWriter wraps ErrOutOfRange or os.ErrClosed.
func TestInvalidOptions(t *testing.T) {
	dir := t.TempDir()
	size := ImageOptions{Size: 1 << 20}
	for name, c := range map[string]struct {
		o           CreateOptions
		unsupported bool
	}{
		"size":          {o: CreateOptions{ImageOptions: ImageOptions{Size: -1}}},
		"grain size":    {o: CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, GrainSize: 3000}}},
		"hw version":    {o: CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, HWVersion: "x"}}},
		"adapter type":  {o: CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, AdapterType: "scsi9"}}, unsupported: true},
		"subformat":     {o: CreateOptions{ImageOptions: size, Subformat: "vmfsSparse"}, unsupported: true},
		"flat+zeroed":   {o: CreateOptions{ImageOptions: size, Subformat: MonolithicFlat, ZeroedGrains: true}, unsupported: true},
		"past the size": {o: CreateOptions{ImageOptions: ImageOptions{Size: MaxSize(MonolithicSparse) + 1}}, unsupported: true},
	} {
		err := Create(filepath.Join(dir, "x.vmdk"), c.o)
		if !errors.Is(err, ErrInvalidOptions) || errors.Is(err, ErrUnsupported) != c.unsupported {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewStreamWriter(io.Discard, StreamOptions{ImageOptions: size, Level: 10}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("compression level: %v", err)
	}

	p := filepath.Join(dir, "d.vmdk")
	if err := Create(p, CreateOptions{ImageOptions: size}); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, p, Options{ReadWrite: true})
	defer d.Close()
	if _, err := d.ReadAt(make([]byte, 1), -1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("ReadAt(-1): %v", err)
	}
	if _, err := d.WriteAt(make([]byte, 2), d.Size()-1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteAt past the end: %v", err)
	}
	if _, err := d.BlockStatus(d.Size(), 1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("BlockStatus past the end: %v", err)
	}
	if err := Commit(context.Background(), p, Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Commit without a backing file: %v", err)
	}
	w, err := NewStreamWriter(io.Discard, StreamOptions{ImageOptions: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, SectorSize), 64<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte{1}, 0); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("stream write behind: %v", err)
	}
	if _, err := w.Write(make([]byte, 2<<20)); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("stream write past the size: %v", err)
	}
	w.Close()
	if _, err := w.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}

func TestLargestSplitDiskFitsTheOpenLimit(t *testing.T) {
	// What Create may make, Open must be able to open.
	extents := (MaxSize(TwoGbMaxExtentFlat) + maxSplitSectors*SectorSize - 1) / (maxSplitSectors * SectorSize)
	if extents+1 > maxOpenFiles {
		t.Fatalf("a %d-byte twoGbMaxExtentFlat disk has %d extent files, more than the %d files Open allows", MaxSize(TwoGbMaxExtentFlat), extents, maxOpenFiles)
	}
}
