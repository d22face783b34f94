package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The write paths under hostile and broken input (issue 12): every case
// must end in its error class before the first byte, or leave images that
// open and read what they read before (or a state re-running completes).

var writeBound = bound{Time: 5 * time.Second, Mem: 16 << 20}

// snapshot is every file of dir, by name: what "nothing was written" means.
func snapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			out[e.Name()] = readFileT(t, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

func sameFiles(t testing.TB, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshot(t, dir)
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed", name)
		}
	}
}

// sparseWith creates a monolithicSparse image (backing "" for none) and
// writes each pattern byte p into 64 KiB at offset 64 KiB * i.
func sparseWith(t testing.TB, path, backing string, size int64, patterns map[int64]byte) {
	t.Helper()
	if err := Create(path, CreateOptions{ImageOptions: ImageOptions{Size: size}, Backing: backing}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	for off, p := range patterns {
		if _, err := d.WriteAt(bytes.Repeat([]byte{p}, 64<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func content(t testing.TB, path string) []byte {
	t.Helper()
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("%s no longer opens: %v", path, err)
	}
	defer d.Close()
	return readAll(t, d)
}

// chain3 is base <- mid <- top in dir, each with content of its own.
func chain3(t testing.TB, dir string) {
	t.Helper()
	sparseWith(t, filepath.Join(dir, "base.vmdk"), "", 1<<20, map[int64]byte{0: 1, 256 << 10: 1})
	sparseWith(t, filepath.Join(dir, "mid.vmdk"), filepath.Join(dir, "base.vmdk"), 0, map[int64]byte{64 << 10: 2})
	sparseWith(t, filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "mid.vmdk"), 0, map[int64]byte{128 << 10: 3})
}

// setHint rewrites the parent link of the image at path in place, as a
// hostile or careless tool would, with no checks.
func setHint(t testing.TB, path, hint string, cid uint32) {
	t.Helper()
	d, err := openOwn(path, Options{AllowUnsafePaths: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.setParent(hint, cid); err != nil {
		t.Fatal(err)
	}
	d.Close()
}

func TestHostileWritesRebaseCycle(t *testing.T) {
	cases := []struct {
		name    string
		image   string
		backing func(dir string) string // the new backing file, made in dir
		opts    RebaseOptions
		want    []error
	}{
		{"onto itself", "top.vmdk", func(dir string) string { return filepath.Join(dir, "top.vmdk") }, RebaseOptions{}, []error{ErrChainBroken, ErrInvalidOptions}},
		{"onto itself, unsafe", "top.vmdk", func(dir string) string { return filepath.Join(dir, "top.vmdk") }, RebaseOptions{Unsafe: true}, []error{ErrChainBroken, ErrInvalidOptions}},
		{"onto itself by another relative path", "top.vmdk", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "sub"), 0o755)
			return filepath.Join(dir, "sub", "..", ".", "top.vmdk")
		}, RebaseOptions{Unsafe: true}, []error{ErrChainBroken}},
		{"onto a symlink to itself", "top.vmdk", func(dir string) string {
			p := filepath.Join(dir, "link.vmdk")
			if err := os.Symlink("top.vmdk", p); err != nil {
				t.Fatal(err)
			}
			return p
		}, RebaseOptions{Unsafe: true}, []error{ErrChainBroken}},
		{"onto a hard link to itself", "top.vmdk", func(dir string) string {
			p := filepath.Join(dir, "hard.vmdk")
			if err := os.Link(filepath.Join(dir, "top.vmdk"), p); err != nil {
				t.Fatal(err)
			}
			return p
		}, RebaseOptions{}, []error{ErrChainBroken}},
		{"onto its child", "mid.vmdk", func(dir string) string { return filepath.Join(dir, "top.vmdk") }, RebaseOptions{}, []error{ErrChainBroken}},
		{"onto its child, unsafe", "mid.vmdk", func(dir string) string { return filepath.Join(dir, "top.vmdk") }, RebaseOptions{Unsafe: true}, []error{ErrChainBroken}},
		{"onto its grandchild", "base.vmdk", func(dir string) string { return filepath.Join(dir, "top.vmdk") }, RebaseOptions{Unsafe: true}, []error{ErrChainBroken}},
		{"onto a copy of its child's descriptor through a hard link", "base.vmdk", func(dir string) string {
			// A monolithicSparse child reached by another name is still
			// the same chain.
			p := filepath.Join(dir, "again.vmdk")
			if err := os.Link(filepath.Join(dir, "mid.vmdk"), p); err != nil {
				t.Fatal(err)
			}
			return p
		}, RebaseOptions{Unsafe: true}, []error{ErrChainBroken}},
		{"past the chain depth limit", "base.vmdk", func(dir string) string {
			sparseWith(t, filepath.Join(dir, "other.vmdk"), "", 1<<20, nil)
			sparseWith(t, filepath.Join(dir, "other2.vmdk"), filepath.Join(dir, "other.vmdk"), 0, nil)
			sparseWith(t, filepath.Join(dir, "other3.vmdk"), filepath.Join(dir, "other2.vmdk"), 0, nil)
			return filepath.Join(dir, "other3.vmdk")
		}, RebaseOptions{Options: Options{MaxChainDepth: 3}, Unsafe: true}, []error{ErrChainBroken}},
		{"onto a file the hint cannot reach", "top.vmdk", func(dir string) string {
			// Without Root, a parent must be in the image's directory:
			// a hint of ../elsewhere would make the image unopenable.
			other := filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-elsewhere")
			os.Mkdir(other, 0o755)
			t.Cleanup(func() { os.RemoveAll(other) })
			sparseWith(t, filepath.Join(other, "far.vmdk"), "", 1<<20, nil)
			return filepath.Join(other, "far.vmdk")
		}, RebaseOptions{Unsafe: true}, []error{ErrInsecurePath}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			chain3(t, dir)
			nb := c.backing(dir)
			want := map[string][]byte{}
			for _, img := range []string{"base.vmdk", "mid.vmdk", "top.vmdk"} {
				want[img] = content(t, filepath.Join(dir, img))
			}
			before := snapshot(t, dir)
			err := withinBound(t, writeBound, func() error {
				return Rebase(context.Background(), filepath.Join(dir, c.image), nb, c.opts)
			})
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Fatalf("Rebase: %v, want %v", err, w)
				}
			}
			sameFiles(t, dir, before)
			for img, b := range want {
				sameBytes(t, img, content(t, filepath.Join(dir, img)), b)
			}
		})
	}
}

// TestHostileWritesCycleRepair: an image already in a cycle (made by
// another tool) cannot be read, but rebase -u opens it far enough to
// relink it, and qemu-img agrees with the result.
func TestHostileWritesCycleRepair(t *testing.T) {
	for _, c := range []struct{ name, hint string }{{"itself", "top.vmdk"}, {"its child", "mid.vmdk"}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sparseWith(t, filepath.Join(dir, "base.vmdk"), "", 1<<20, map[int64]byte{0: 1})
			sparseWith(t, filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "base.vmdk"), 0, map[int64]byte{128 << 10: 3})
			sparseWith(t, filepath.Join(dir, "mid.vmdk"), filepath.Join(dir, "top.vmdk"), 0, nil)
			want := content(t, filepath.Join(dir, "top.vmdk"))
			top := filepath.Join(dir, "top.vmdk")
			setHint(t, top, c.hint, 0x1234)
			if _, err := Open(top, Options{}); !errors.Is(err, ErrChainBroken) {
				t.Fatalf("Open of a cycle: %v, want ErrChainBroken", err)
			}
			if err := Rebase(context.Background(), top, "", RebaseOptions{}); !errors.Is(err, ErrChainBroken) {
				t.Fatalf("safe Rebase of a cycle: %v, want ErrChainBroken (it cannot read the old content)", err)
			}
			err := withinBound(t, writeBound, func() error {
				return Rebase(context.Background(), top, filepath.Join(dir, "base.vmdk"), RebaseOptions{Unsafe: true})
			})
			if err != nil {
				t.Fatalf("rebase -u of a cycle: %v", err)
			}
			sameBytes(t, "repaired top", content(t, top), want)
			sameBytes(t, "qemu-img's view of the repaired top", qemuRaw(t, dir, "top.vmdk"), want)
		})
	}
}

// countdownCtx is done after n calls of Err: a failure injected at the
// n-th point a long write path checks its context.
type countdownCtx struct {
	context.Context
	n *int
}

func (c countdownCtx) Err() error {
	if *c.n--; *c.n < 0 {
		return context.Canceled
	}
	return nil
}

// commitParent builds parent (per kind) and child in dir; the child has
// data over every extent of the parent. It returns the child's path.
func commitParent(t testing.TB, dir, kind string) string {
	t.Helper()
	parent := filepath.Join(dir, "parent.vmdk")
	switch kind {
	case "sparse":
		sparseWith(t, parent, "", 1<<20, map[int64]byte{0: 1, 512 << 10: 1})
	case "flat", "rdonly flat":
		access := "RW"
		if kind == "rdonly flat" {
			access = "RDONLY"
		}
		for _, f := range []string{"p1.raw", "p2.raw"} {
			writeFile(t, filepath.Join(dir, f), bytes.Repeat([]byte{7}, 512<<10))
		}
		writeFile(t, parent, []byte("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
			"RW 1024 FLAT \"p1.raw\" 0\n"+access+" 1024 FLAT \"p2.raw\" 0\n"))
	case "missing grain table":
		sparseWith(t, parent, "", 1<<20, map[int64]byte{0: 1})
		// The parent's only grain table dropped from its directory: its
		// reads fall through (zeros), but no write can land there.
		d := mustOpen(t, parent, Options{})
		gd := int64(d.Header().GDOffset) * SectorSize
		d.Close()
		f, err := os.OpenFile(parent, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(make([]byte, 4), gd)
		f.Close()
	}
	child := filepath.Join(dir, "child.vmdk")
	sparseWith(t, child, parent, 0, map[int64]byte{64 << 10: 5, 640 << 10: 6})
	return child
}

func TestHostileWritesCommit(t *testing.T) {
	cases := []struct {
		name, parent string
		want         error
	}{
		{"a RDONLY extent in the parent", "rdonly flat", ErrReadOnly},
		{"a parent grain table that is not allocated", "missing grain table", ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			child := commitParent(t, dir, c.parent)
			want := content(t, child)
			before := snapshot(t, dir)
			err := withinBound(t, writeBound, func() error { return Commit(context.Background(), child, Options{}) })
			if !errors.Is(err, c.want) {
				t.Fatalf("Commit: %v, want %v", err, c.want)
			}
			sameFiles(t, dir, before)
			sameBytes(t, "child", content(t, child), want)
		})
	}
}

// TestHostileWritesCommitInterrupted stops Commit at every point it checks
// its context: each time the child still reads the same over a valid
// chain, and a second Commit completes the first.
func TestHostileWritesCommitInterrupted(t *testing.T) {
	for _, kind := range []string{"sparse", "flat"} {
		for stop := 0; ; stop++ {
			dir := t.TempDir()
			child := commitParent(t, dir, kind)
			want := content(t, child)
			n := stop
			var err error
			t.Run(fmt.Sprintf("%s/stop %d", kind, stop), func(t *testing.T) {
				err = withinBound(t, writeBound, func() error {
					return Commit(countdownCtx{context.Background(), &n}, child, Options{})
				})
			})
			d := mustOpen(t, child, Options{})
			if cerr := d.ChainError(); cerr != nil {
				t.Fatalf("%s, stop %d (%v): chain broken: %v", kind, stop, err, cerr)
			}
			sameBytes(t, "child after the interrupted commit", readAll(t, d), want)
			d.Close()
			if err == nil {
				break // no check point left to stop at
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s, stop %d: %v", kind, stop, err)
			}
			if err := Commit(context.Background(), child, Options{}); err != nil {
				t.Fatalf("%s, stop %d: commit again: %v", kind, stop, err)
			}
			sameBytes(t, "parent after commit again", content(t, filepath.Join(dir, "parent.vmdk")), want)
			sameBytes(t, "child after commit again", content(t, child), want)
			if stop > 50 {
				t.Fatal("Commit checks its context more than 50 times on a 1 MiB image")
			}
		}
	}
}

// TestHostileWritesAcrossExtents: a write whose range ends in an extent it
// cannot write is refused whole, before the CID or any byte changes.
func TestHostileWritesAcrossExtents(t *testing.T) {
	cases := []struct {
		name, second string // the second extent line
		want         error
	}{
		{"into a RDONLY extent", `RDONLY 1024 FLAT "p2.raw" 0`, ErrReadOnly},
		{"into a ZERO extent", `RW 1024 ZERO`, ErrReadOnly},
		{"into a NOACCESS extent", `NOACCESS 1024 FLAT "p2.raw" 0`, ErrReadOnly},
		{"into a sparse extent without its grain table", `RW 1024 SPARSE "s.vmdk"`, ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "p1.raw"), bytes.Repeat([]byte{7}, 512<<10))
			writeFile(t, filepath.Join(dir, "p2.raw"), bytes.Repeat([]byte{8}, 512<<10))
			sparseWith(t, filepath.Join(dir, "s.vmdk"), "", 512<<10, nil)
			// Drop the sparse extent's grain table from its directory.
			s := mustOpen(t, filepath.Join(dir, "s.vmdk"), Options{})
			gd := int64(s.Header().GDOffset) * SectorSize
			s.Close()
			f, err := os.OpenFile(filepath.Join(dir, "s.vmdk"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(make([]byte, 4), gd)
			f.Close()
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
				"RW 1024 FLAT \"p1.raw\" 0\n"+c.second+"\n"))
			before := snapshot(t, dir)
			d := mustOpen(t, img, Options{ReadWrite: true})
			err = withinBound(t, writeBound, func() error {
				_, err := d.WriteAt(bytes.Repeat([]byte{9}, 128<<10), 448<<10)
				if err == nil {
					err = d.Flush()
				}
				return err
			})
			if !errors.Is(err, c.want) {
				t.Fatalf("WriteAt: %v, want %v", err, c.want)
			}
			d.Close()
			sameFiles(t, dir, before)
		})
	}
}

// pointGrain0 makes grain 0's entry (in the grain table and its redundant
// copy) point at the sector where(h, gd, rgd, gt, fileSectors) says.
func pointGrain0(t testing.TB, path string, where func(h *SparseHeader, gd, rgd, gt1 uint32, fileSectors int64) uint32) {
	t.Helper()
	d := mustOpen(t, path, Options{})
	se := d.extents[0].ext.(*sparseExtent)
	gt, err := se.readTable(int64(se.gd[0]))
	if err != nil {
		t.Fatal(err)
	}
	v := where(d.Header(), se.gd[0], se.rgd[0], gt[1], se.src.size/SectorSize)
	tables := []uint32{se.gd[0], se.rgd[0]}
	d.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, sector := range tables {
		if _, err := f.WriteAt(appendEntries(nil, []uint32{v}), int64(sector)*SectorSize); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileWritesThroughEntry: a grain table entry pointing at metadata
// or at another grain is refused with ErrCorrupt before the first byte,
// and Check calls the same image corrupt.
func TestHostileWritesThroughEntry(t *testing.T) {
	cases := []struct {
		name  string
		where func(h *SparseHeader, gd, rgd, gt1 uint32, fileSectors int64) uint32
	}{
		{"the embedded descriptor", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(h.DescriptorOffset) }},
		{"the redundant grain directory", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(h.RGDOffset) }},
		{"the redundant grain table", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return rgd }},
		{"the grain directory", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(h.GDOffset) }},
		{"its own grain table", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return gd }},
		{"the padding before the first grain", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(h.OverHead) - 1 }},
		{"sector 1 without zeroed grains", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return 1 }},
		{"another entry's grain", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return gt1 }},
		{"half of another entry's grain", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return gt1 + uint32(h.GrainSize/2) }},
		{"past the end of the file", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(n) + 8 }},
		{"a grain the file ends inside", func(h *SparseHeader, gd, rgd, gt1 uint32, n int64) uint32 { return uint32(n) - 8 }},
	}
	writes := []struct {
		name     string
		off      int64
		n        int
		overHead bool // the header's overHead zeroed: only the metadata's own places guard it
	}{{"part of the grain", 512, 4096, false}, {"the grain and the next", 0, 128 << 10, false}, {"no overHead", 512, 4096, true}}
	for _, c := range cases {
		for _, w := range writes {
			if w.overHead && strings.Contains(c.name, "padding") {
				continue // padding is only known from overHead
			}
			t.Run(c.name+"/"+w.name, func(t *testing.T) {
				dir := t.TempDir()
				img := filepath.Join(dir, "s.vmdk")
				sparseWith(t, img, "", 1<<20, map[int64]byte{0: 1, 64 << 10: 2})
				pointGrain0(t, img, c.where)
				if w.overHead {
					f, err := os.OpenFile(img, os.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					f.WriteAt(make([]byte, 8), 64) // the header's overHead field
					f.Close()
				}
				before := snapshot(t, dir)
				d := mustOpen(t, img, Options{ReadWrite: true})
				err := withinBound(t, writeBound, func() error {
					_, err := d.WriteAt(bytes.Repeat([]byte{9}, w.n), w.off)
					if err == nil {
						err = d.Flush()
					}
					return err
				})
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("WriteAt: %v, want ErrCorrupt", err)
				}
				d.Close()
				sameFiles(t, dir, before)
				r, err := Check(context.Background(), img, CheckOptions{})
				if err != nil || len(r.Corruptions) == 0 {
					t.Fatalf("Check of the same image: %+v, %v: want a corruption", r, err)
				}
			})
		}
	}
}

// appendBytes appends b to the file at path and returns the sector where
// it starts.
func appendBytes(t testing.TB, path string, b []byte) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if _, err := f.WriteAt(b, fi.Size()); err != nil {
		t.Fatal(err)
	}
	return fi.Size() / SectorSize
}

func cidOf(t testing.TB, path string) uint32 {
	t.Helper()
	d := mustOpen(t, path, Options{})
	defer d.Close()
	return d.CID()
}

// TestHostileWritesCheckRepairShared: check -r never truncates bytes that
// another extent line, a descriptor or a parent uses in the same file,
// and still repairs a leak in a file only one sparse extent uses.
func TestHostileWritesCheckRepairShared(t *testing.T) {
	flat := bytes.Repeat([]byte{0x5f}, 8<<10)
	cases := []struct {
		name string
		// build makes the image in dir and returns its path and the
		// file check -r must leave alone ("" when it may repair).
		build          func(t *testing.T, dir string) (img, keep string)
		leak, repaired bool
	}{
		{"a flat extent after the sparse extent's last grain", func(t *testing.T, dir string) (string, string) {
			s := filepath.Join(dir, "s.vmdk")
			sparseWith(t, s, "", 1<<20, map[int64]byte{0: 1})
			at := appendBytes(t, s, flat)
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
				"RW 2048 SPARSE \"s.vmdk\"\nRW 16 FLAT \"s.vmdk\" %d\n", at)))
			return img, s
		}, false, false},
		{"the same sparse file named twice (once by a hard link), with a real leak (repaired)", func(t *testing.T, dir string) (string, string) {
			// Both lines share one parsed extent: its tables are all that
			// refer to the file, so the leak is one, and safe to cut.
			s := filepath.Join(dir, "s.vmdk")
			sparseWith(t, s, "", 1<<20, map[int64]byte{0: 1})
			appendBytes(t, s, flat)
			if err := os.Link(s, filepath.Join(dir, "h.vmdk")); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
				"RW 2048 SPARSE \"s.vmdk\"\nRW 2048 SPARSE \"h.vmdk\"\n"))
			return img, ""
		}, true, true},
		{"the parent's flat extent in the child's sparse file", func(t *testing.T, dir string) (string, string) {
			c := filepath.Join(dir, "c.vmdk")
			sparseWith(t, c, "", 1<<20, map[int64]byte{0: 1})
			at := appendBytes(t, c, bytes.Repeat([]byte{0x5f}, 1<<20))
			p := filepath.Join(dir, "p.vmdk")
			writeFile(t, p, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"+
				"RW 2048 FLAT \"c.vmdk\" %d\n", at)))
			setHint(t, c, "p.vmdk", cidOf(t, p))
			return c, c
		}, false, false},
		{"a leak in a file nothing else uses (repaired)", func(t *testing.T, dir string) (string, string) {
			s := filepath.Join(dir, "s.vmdk")
			sparseWith(t, s, "", 1<<20, map[int64]byte{0: 1})
			appendBytes(t, s, flat)
			return s, ""
		}, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			img, keep := c.build(t, dir)
			want := content(t, img)
			var before []byte
			if keep != "" {
				before = readFileT(t, keep)
			}
			var r *CheckReport
			err := withinBound(t, writeBound, func() error {
				var err error
				r, err = Check(context.Background(), img, CheckOptions{Repair: true})
				return err
			})
			if err != nil || len(r.Corruptions) != 0 || len(r.Leaks) > 1 {
				t.Fatalf("check -r: %+v %v", r, err)
			}
			if got := len(r.Leaks) > 0; got != c.leak {
				t.Fatalf("leaks %v, want some: %v", r.Leaks, c.leak)
			}
			if got := len(r.Repaired) > 0; got != c.repaired {
				t.Fatalf("repaired %v, want %v: %+v", r.Repaired, c.repaired, r)
			}
			if keep != "" {
				sameBytes(t, keep+" after check -r", readFileT(t, keep), before)
			}
			sameBytes(t, "content after check -r", content(t, img), want)
			if !c.repaired {
				return
			}
			if r2, err := Check(context.Background(), img, CheckOptions{}); err != nil || !r2.Clean() {
				t.Fatalf("check after the repair: %+v %v", r2, err)
			}
		})
	}
}

// TestHostileWritesEmbeddedDescriptorTorn cuts power while rebase -u
// rewrites a monolithicSparse child's embedded descriptor with a parent
// name of another length, which moves every line after it across
// sectors. At every cut the child opens, names its old or its new parent,
// and (over a valid chain) reads as before.
func TestHostileWritesEmbeddedDescriptorTorn(t *testing.T) {
	rnd := powerSeed(t)
	dir := t.TempDir()
	p := installPowerFS(t, dir)
	_, child, m := powerChain(t, p, rnd, dir, MonolithicSparse)
	longName := tearingName(t, child)
	nb := filepath.Join(dir, longName)
	if err := Create(nb, CreateOptions{Subformat: MonolithicSparse, ImageOptions: ImageOptions{Size: m.size}}); err != nil {
		t.Fatal(err)
	}
	m.writeAll(t, p, nb, m.base, 1000) // the same content as base.vmdk
	p.mark("rebase")
	if err := Rebase(context.Background(), child, nb, RebaseOptions{Unsafe: true}); err != nil {
		t.Fatal(err)
	}
	p.mark("rebased")
	all := len(m.writes) - 1
	outcome := map[string]int{}
	powerCase(t, p, rnd, "rebase", 60, func(c *powerCut) error {
		d, err := Open(filepath.Join(c.dir, "disk.vmdk"), Options{})
		if err != nil {
			return fmt.Errorf("child: %w", err)
		}
		defer d.Close()
		hint := d.ParentFileNameHint()
		if hint != "base.vmdk" && hint != longName {
			return fmt.Errorf("the child names parent %q", hint)
		}
		if c.reached("rebased") && (hint != longName || len(d.Descriptor().DDB) == 0) {
			return fmt.Errorf("after Rebase returned: parent %q, %d DDB lines", hint, len(d.Descriptor().DDB))
		}
		if err := d.ChainError(); err != nil {
			return fmt.Errorf("chain: %w", err)
		}
		outcome[fmt.Sprintf("parent %s, %d DDB lines", hint, len(d.Descriptor().DDB))]++
		return m.verify(d, all, all)
	})
	t.Logf("cuts: %v", outcome)
}

// tearingName is a parent name that makes the descriptor of the image at
// path pass its first sector with the boundary inside a key, before its
// '=': a power cut keeping only the new first sector then leaves a line
// no parser accepts.
func tearingName(t *testing.T, path string) string {
	t.Helper()
	d := mustOpen(t, path, Options{})
	desc := *d.Descriptor()
	d.Close()
	for n := 20; n < 250; n++ {
		desc.ParentFileNameHint = strings.Repeat("n", n) + ".vmdk"
		text := string(desc.Format())
		if len(text) <= SectorSize {
			continue
		}
		start := strings.LastIndexByte(text[:SectorSize], '\n') + 1
		if eq := strings.IndexByte(text[start:], '='); eq < 0 || start+eq >= SectorSize {
			return desc.ParentFileNameHint
		}
	}
	t.Fatal("no parent name puts the first sector's end inside a key")
	return ""
}

// TestHostileWritesFlatAlias: a flat extent line naming bytes another part
// of the image occupies (a sparse extent's header, tables or grains in
// the same file, or the descriptor file itself) is refused with
// ErrCorrupt before the first byte; a flat extent after the sparse
// extent's last grain stays writable.
func TestHostileWritesFlatAlias(t *testing.T) {
	head := "# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n"
	cases := []struct {
		name  string
		build func(t *testing.T, dir string) (img string, off int64) // the image and where to write
		want  error                                                  // nil: the write works and reads back
	}{
		{"a flat extent over the sparse extent's header", func(t *testing.T, dir string) (string, int64) {
			sparseWith(t, filepath.Join(dir, "s.vmdk"), "", 1<<20, map[int64]byte{0: 1})
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte(head+"RW 2048 SPARSE \"s.vmdk\"\nRW 16 FLAT \"s.vmdk\" 0\n"))
			return img, 1 << 20
		}, ErrCorrupt},
		{"a flat extent over the sparse extent's first grain", func(t *testing.T, dir string) (string, int64) {
			s := filepath.Join(dir, "s.vmdk")
			sparseWith(t, s, "", 1<<20, map[int64]byte{0: 1})
			d := mustOpen(t, s, Options{})
			over := d.Header().OverHead
			d.Close()
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte(fmt.Sprintf(head+"RW 2048 SPARSE \"s.vmdk\"\nRW 16 FLAT \"s.vmdk\" %d\n", over)))
			return img, 1 << 20
		}, ErrCorrupt},
		{"a flat extent that is the descriptor file", func(t *testing.T, dir string) (string, int64) {
			img := filepath.Join(dir, "d.vmdk")
			text := head + "RW 8 FLAT \"d.vmdk\" 0\n"
			writeFile(t, img, []byte(text+"# "+strings.Repeat("x", 4096)+"\n"))
			return img, 0
		}, ErrCorrupt},
		{"a flat extent after the sparse extent's last grain (writable)", func(t *testing.T, dir string) (string, int64) {
			s := filepath.Join(dir, "s.vmdk")
			sparseWith(t, s, "", 1<<20, map[int64]byte{0: 1})
			at := appendBytes(t, s, make([]byte, 8<<10))
			img := filepath.Join(dir, "d.vmdk")
			writeFile(t, img, []byte(fmt.Sprintf(head+"RW 2048 SPARSE \"s.vmdk\"\nRW 16 FLAT \"s.vmdk\" %d\n", at)))
			return img, 1 << 20
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			img, off := c.build(t, dir)
			want := content(t, img)
			before := snapshot(t, dir)
			d := mustOpen(t, img, Options{ReadWrite: true})
			data := bytes.Repeat([]byte{0xee}, 4096)
			err := withinBound(t, writeBound, func() error {
				_, err := d.WriteAt(data, off)
				if err == nil {
					err = d.Flush()
				}
				return err
			})
			d.Close()
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("WriteAt: %v, want %v", err, c.want)
				}
				sameFiles(t, dir, before)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			copy(want[off:], data)
			sameBytes(t, "after the write", content(t, img), want)
		})
	}
}

// TestHostileWritesTableSpot: a grain directory entry that places a grain
// table over the descriptor, a directory, another table or a grain would
// have the next flush overwrite them: the write that would dirty that
// table is refused with ErrCorrupt before the first byte.
func TestHostileWritesTableSpot(t *testing.T) {
	cases := []struct {
		name string
		// where gives grain table 0's new sector from the header, the two
		// directories' first entries and grain 512's sector (in table 1).
		where func(h *SparseHeader, gt0, rgt0, grain512 uint32) uint32
	}{
		{"the embedded descriptor", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return uint32(h.DescriptorOffset) + 10 }},
		{"the grain directory", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return uint32(h.GDOffset) }},
		{"the redundant grain directory", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return uint32(h.RGDOffset) }},
		{"its own redundant copy", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return rgt0 }},
		{"half of grain table 1", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return gt0 + 4 + 2 }},
		{"another table's grain", func(h *SparseHeader, gt0, rgt0, g uint32) uint32 { return g }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "s.vmdk")
			// 64 MiB: two grain tables; grain 512 (32 MiB) is table 1's. Its
			// first bytes are zeros, as is every place the cases point at
			// where grain 2's entry would be: read as a table, each says
			// "unallocated", so only the table's place betrays it.
			sparseWith(t, img, "", 64<<20, nil)
			grain := make([]byte, 64<<10)
			grain[len(grain)-1] = 4
			wd := mustOpen(t, img, Options{ReadWrite: true})
			if _, err := wd.WriteAt(grain, 32<<20); err != nil {
				t.Fatal(err)
			}
			wd.Close()
			d := mustOpen(t, img, Options{})
			se := d.extents[0].ext.(*sparseExtent)
			h := d.Header()
			gt1, err := se.readTable(int64(se.gd[1]))
			if err != nil {
				t.Fatal(err)
			}
			v := c.where(h, se.gd[0], se.rgd[0], gt1[0])
			gdAt := int64(h.GDOffset) * SectorSize
			d.Close()
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(appendEntries(nil, []uint32{v}), gdAt)
			f.Close()
			before := snapshot(t, dir)
			w := mustOpen(t, img, Options{ReadWrite: true})
			err = withinBound(t, writeBound, func() error {
				_, err := w.WriteAt(bytes.Repeat([]byte{9}, 4096), 128<<10) // grain 2
				if err == nil {
					err = w.Flush()
				}
				return err
			})
			w.Close()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "refusing to write it") {
				t.Fatalf("WriteAt: %v, want ErrCorrupt for the grain table's place", err)
			}
			sameFiles(t, dir, before)
			if r, err := Check(context.Background(), img, CheckOptions{}); err != nil || len(r.Corruptions) == 0 {
				t.Fatalf("Check of the same image: %+v, %v: want a corruption", r, err)
			}
		})
	}
}

// TestHostileWritesCheckRepairTablePlace: check -r rewrites a grain table
// from its redundant copy (or the copy from the table) only where neither
// lies over other metadata: a directory entry placing one over the
// descriptor would have the repair overwrite it, leaving an image that no
// longer opens.
func TestHostileWritesCheckRepairTablePlace(t *testing.T) {
	for _, dirName := range []string{"grain directory", "redundant grain directory"} {
		t.Run("the "+dirName+" places table 0 over the descriptor", func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "s.vmdk")
			sparseWith(t, img, "", 1<<20, map[int64]byte{0: 1})
			d := mustOpen(t, img, Options{})
			h := d.Header()
			at := int64(h.GDOffset) * SectorSize
			if dirName != "grain directory" {
				at = int64(h.RGDOffset) * SectorSize
			}
			desc := uint32(h.DescriptorOffset)
			d.Close()
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(appendEntries(nil, []uint32{desc}), at)
			f.Close()
			before := snapshot(t, dir)
			var r *CheckReport
			err = withinBound(t, writeBound, func() error {
				var err error
				r, err = Check(context.Background(), img, CheckOptions{Repair: true})
				return err
			})
			if err != nil || len(r.Corruptions) == 0 || len(r.Repaired) != 0 {
				t.Fatalf("check -r: %v, %d corruptions, repaired %q: want corruptions and no repair", err, len(r.Corruptions), r.Repaired)
			}
			sameFiles(t, dir, before)
			d2, err := Open(img, Options{}) // still opens (its reads through table 0 are refused as corrupt)
			if err != nil {
				t.Fatalf("after check -r: %v", err)
			}
			d2.Close()
		})
	}
}

// TestHostileWritesCOWDDirectory: in a COWD (vmfsSparse) extent whose
// grain directory lies after the grains, an entry pointing a grain at the
// directory is refused with ErrCorrupt before the first byte (and Check
// calls it corrupt): the directory is metadata there too.
func TestHostileWritesCOWDDirectory(t *testing.T) {
	raw := make([]byte, 1<<20)
	raw[0], raw[8<<10] = 1, 2 // grains 0 and 1 of 8 KiB
	img := buildCOWD(t, raw, 16)
	le := binary.LittleEndian
	// Move the directory (one entry, at sector 4) to a sector of its own
	// at the end, followed by a grain's worth of padding.
	gdAt := uint32(len(img) / SectorSize)
	img = append(img, img[4*SectorSize:5*SectorSize]...)
	img = append(img, make([]byte, 16*SectorSize)...)
	le.PutUint32(img[20:], gdAt)
	le.PutUint32(img[28:], uint32(len(img)/SectorSize))
	gt := int(le.Uint32(img[4*SectorSize:])) * SectorSize
	le.PutUint32(img[gt:], gdAt) // grain 0 over the directory
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c-delta.vmdk"), img)
	path := filepath.Join(dir, "c.vmdk") // a bare extent has no CID to change
	writeFile(t, path, []byte(fmt.Sprintf("version=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW %d VMFSSPARSE \"c-delta.vmdk\"\n", len(raw)/SectorSize)))
	before := snapshot(t, dir)
	d := mustOpen(t, path, Options{ReadWrite: true})
	err := withinBound(t, writeBound, func() error {
		_, err := d.WriteAt(bytes.Repeat([]byte{9}, 512), 0)
		if err == nil {
			err = d.Flush()
		}
		return err
	})
	d.Close()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("WriteAt: %v, want ErrCorrupt", err)
	}
	sameFiles(t, dir, before)
	if r, err := Check(context.Background(), path, CheckOptions{}); err != nil || len(r.Corruptions) == 0 {
		t.Fatalf("Check: %v, %v: want a corruption", r, err)
	}
}

// A directory whose entries after the first all name one full table (512
// data entries, one stored grain) is refused for writing through entry 0's
// own table, before the write guard reads the shared table 2^16 times and
// holds 2^25 grain entries (128 MiB).
func TestHostileWritesSharedFullTable(t *testing.T) {
	const n = 1 << 16
	gt0 := int64(1 + n*4/SectorSize) // entry 0's own table
	gt := gt0 + 4                    // the table every other entry names
	grain := gt + 4
	h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: n * gtes * 128, GrainSize: 128,
		NumGTEsPerGT: gtes, GDOffset: 1, OverHead: uint64(grain)}
	dir := append([]uint32{uint32(gt0)}, repeat(uint32(gt), n-1)...)
	own := make([]uint32, gtes)
	own[0] = uint32(grain)
	p := filepath.Join(t.TempDir(), "shared-full.vmdk")
	sparseFile(t, p, (grain+128)*SectorSize, map[int64][]byte{0: h.marshal(), SectorSize: u32s(dir...),
		gt0 * SectorSize: u32s(own...), gt * SectorSize: u32s(repeat(uint32(grain), gtes)...),
		grain * SectorSize: bytes.Repeat([]byte{0xcd}, 128*SectorSize)})
	d := mustOpen(t, p, Options{ReadWrite: true})
	defer d.Close()
	before := readFileT(t, p)
	err := withinBound(t, writeBound, func() error {
		_, err := d.WriteAt(bytes.Repeat([]byte{0xee}, 4096), 0)
		return err
	})
	t.Logf("refused: %v", err)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("WriteAt through a shared table: %v, want ErrCorrupt", err)
	}
	sameBytes(t, "image after the refused write", readFileT(t, p), before)
}
