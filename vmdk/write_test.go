package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// randomWrites applies n random writes (sub-grain, grain-crossing, whole
// zero grains) to d and to model.
func randomWrites(t testing.TB, r *rand.Rand, d *Disk, model []byte, n int) {
	t.Helper()
	size := int64(len(model))
	for range n {
		off := r.Int63n(size)
		ln := min(1+r.Int63n(200<<10), size-off)
		buf := make([]byte, ln)
		switch r.Intn(3) {
		case 0: // zeros, often whole aligned grains
			off = off / (64 << 10) * (64 << 10)
			ln = min(int64(64<<10)*(1+r.Int63n(3)), size-off)
			buf = make([]byte, ln)
		default:
			r.Read(buf)
		}
		if _, err := d.WriteAt(buf, off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", off, ln, err)
		}
		copy(model[off:], buf)
	}
}

// TestWriteChildOverParent: writes into a child copy the rest of each grain
// from the parent, zero writes hide the parent, and qemu-img reads the same.
func TestWriteChildOverParent(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 512
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", fmt.Sprint(size))
	qemuIO(t, dir, "base.vmdk", "write -P 0x11 0 3m")
	model := bytes.Repeat([]byte{0x11}, size)
	copy(model[3<<20:], make([]byte, 512))
	for _, zeroed := range []bool{false, true} {
		child := fmt.Sprintf("child-%v.vmdk", zeroed)
		err := Create(filepath.Join(dir, child), CreateOptions{Backing: filepath.Join(dir, "base.vmdk"), ZeroedGrains: zeroed})
		if err != nil {
			t.Fatal(err)
		}
		info := qemuImgInfo(t, dir, child)
		if info.BackingFilename != "base.vmdk" || info.VirtualSize != size {
			t.Fatalf("qemu-img info of child: %+v", info)
		}
		m := bytes.Clone(model)
		d := mustOpen(t, filepath.Join(dir, child), Options{ReadWrite: true})
		randomWrites(t, rand.New(rand.NewSource(7)), d, m, 30)
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, child, readAll(t, d), m)
		d.Close()
		sameBytes(t, "qemu-img's reading of "+child, qemuRaw(t, dir, child), m)
		sh(t, dir, "qemu-img", "check", "-f", "vmdk", child)
	}
}

// TestWriteChangesCID: the first write after open re-randomises the CID,
// and a child made before then sees its chain broken, not mixed content.
func TestWriteChangesCID(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "child.vmdk")
	if err := Create(base, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Backing: base}); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, base, Options{ReadWrite: true})
	old := d.CID()
	if _, err := d.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = mustOpen(t, base, Options{})
	if d.CID() == old {
		t.Fatal("CID unchanged after a write")
	}
	c := mustOpen(t, child, Options{})
	if _, err := c.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("child read after the parent changed: %v, want ErrChainBroken", err)
	}
}

// TestWriteAcrossExtents: writes that cross the 2 GiB extent boundaries of
// the split subformats land in both extents, as qemu-img reads them.
func TestWriteAcrossExtents(t *testing.T) {
	for _, sf := range []Subformat{TwoGbMaxExtentSparse, TwoGbMaxExtentFlat} {
		t.Run(string(sf), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "big.vmdk")
			if err := Create(p, CreateOptions{Subformat: sf, ImageOptions: ImageOptions{Size: 5 << 30}}); err != nil {
				t.Fatal(err)
			}
			d := mustOpen(t, p, Options{ReadWrite: true})
			if n := len(d.Extents()); n != 3 {
				t.Fatalf("%d extents", n)
			}
			// The model is a sparse raw file holding the same writes.
			model, err := os.Create(filepath.Join(dir, "model.raw"))
			if err != nil {
				t.Fatal(err)
			}
			model.Truncate(5 << 30)
			r := rand.New(rand.NewSource(5))
			for _, at := range []int64{2<<30 - 3000, 4<<30 - 70000, 4<<30 - 512, 5<<30 - 100} {
				buf := make([]byte, min(int64(1+r.Intn(200<<10)), 5<<30-at))
				r.Read(buf)
				if _, err := d.WriteAt(buf, at); err != nil {
					t.Fatalf("WriteAt(%d): %v", at, err)
				}
				model.WriteAt(buf, at)
				got := make([]byte, len(buf))
				if _, err := d.ReadAt(got, at); err != nil || !bytes.Equal(got, buf) {
					t.Fatalf("read back at %d: %v", at, err)
				}
			}
			model.Close()
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			d.Close()
			sh(t, dir, "qemu-img", "check", "-f", "vmdk", "big.vmdk")
			sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "big.vmdk", "model.raw")
		})
	}
}
