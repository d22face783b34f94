package vmdk

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

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
