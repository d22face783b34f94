package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var subformats = []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}

// checkAgainstQemu asserts that our full read equals qemu-img's and that
// size, CID, parentCID and createType agree with qemu-img info.
func checkAgainstQemu(t *testing.T, dir, img string, opts Options) *Disk {
	t.Helper()
	d := mustOpen(t, filepath.Join(dir, img), opts)
	sameBytes(t, img, readAll(t, d), qemuRaw(t, dir, img))
	info := qemuImgInfo(t, dir, img)
	if d.Size() != info.VirtualSize {
		t.Errorf("%s: size %d, qemu-img says %d", img, d.Size(), info.VirtualSize)
	}
	data := info.FormatSpecific.Data
	if d.CID() != data.CID || d.ParentCID() != data.ParentCID || d.CreateType() != data.CreateType {
		t.Errorf("%s: CID %08x parentCID %08x createType %q; qemu-img: %08x %08x %q",
			img, d.CID(), d.ParentCID(), d.CreateType(), data.CID, data.ParentCID, data.CreateType)
	}
	return d
}

// TestQemuSubformats reads every subformat qemu-img writes, with data,
// partial grains and holes.
func TestQemuSubformats(t *testing.T) {
	for _, sf := range subformats {
		t.Run(sf, func(t *testing.T) {
			dir := t.TempDir()
			const size = 6<<20 + 3*512 // not a grain multiple
			if sf == "streamOptimized" {
				writeFile(t, filepath.Join(dir, "src.raw"), mixedContent(1, size))
				sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sf, "src.raw", "d.vmdk")
			} else {
				sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sf, "d.vmdk", fmt.Sprint(size))
				qemuIO(t, dir, "d.vmdk",
					"write -P 0xab 0 64k", "write -P 0x11 100k 3k", "write -P 0x22 4m 1m", "write -P 0x33 6m 1536")
			}
			d := checkAgainstQemu(t, dir, "d.vmdk", Options{})
			if d.Size() != size {
				t.Errorf("size %d, want %d", d.Size(), size)
			}
		})
	}
}

// TestQemuOddCapacities: capacities that are not a grain multiple (200 and
// 10001 sectors), with the last partial grain written.
func TestQemuOddCapacities(t *testing.T) {
	for _, sectors := range []int{200, 10001} {
		for _, sf := range []string{"monolithicSparse", "streamOptimized"} {
			t.Run(fmt.Sprintf("%s-%d", sf, sectors), func(t *testing.T) {
				dir := t.TempDir()
				size := sectors * 512
				if sf == "streamOptimized" {
					writeFile(t, filepath.Join(dir, "src.raw"), mixedContent(int64(sectors), size))
					sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sf, "src.raw", "d.vmdk")
				} else {
					sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "d.vmdk", fmt.Sprint(size))
					qemuIO(t, dir, "d.vmdk", fmt.Sprintf("write -P 0x5a %d 512", size-512), "write -P 0x01 0 4k")
				}
				checkAgainstQemu(t, dir, "d.vmdk", Options{})
			})
		}
	}
}

// TestQemuZeroedGrains: GTE 1 reads zeros and does not fall through to the
// parent.
func TestQemuZeroedGrains(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "4M")
	qemuIO(t, dir, "base.vmdk", "write -P 0xcc 0 4M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
	qemuIO(t, dir, "top.vmdk", "write -P 0xdd 0 128k", "write -z 64k 64k", "write -z 1m 256k")
	d := checkAgainstQemu(t, dir, "top.vmdk", Options{})
	if h := d.Header(); h == nil || !h.ZeroedGTE() || h.Version != 2 {
		t.Fatalf("header %+v: want version 2 with the zeroed-grain flag", h)
	}
	got := make([]byte, 256<<10)
	if _, err := d.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("zeroed grains read the parent's data")
	}
	m, err := d.BlockStatus(1<<20, 256<<10)
	if err != nil || !m.Zero || m.Data || m.Depth != 0 || m.Length != 256<<10 {
		t.Fatalf("BlockStatus of zeroed grains = %+v, %v", m, err)
	}
}

// TestQemuChain3 reads a 3-deep chain (top -> mid -> base) with writes at
// each level, parents named relative to the child.
func TestQemuChain3(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "8M")
	qemuIO(t, dir, "base.vmdk", "write -P 0x01 0 8M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk")
	qemuIO(t, dir, "mid.vmdk", "write -P 0x02 1m 1m", "write -P 0x22 3m 5k")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk")
	qemuIO(t, dir, "top.vmdk", "write -P 0x03 1536k 1m", "write -P 0x33 7m 100")
	d := checkAgainstQemu(t, dir, "top.vmdk", Options{})
	depth := 0
	for p := d; p.Parent() != nil; p = p.Parent() {
		if p.ParentCID() != p.Parent().CID() {
			t.Errorf("%s parentCID %08x != parent CID %08x", p.Path(), p.ParentCID(), p.Parent().CID())
		}
		depth++
	}
	if depth != 2 {
		t.Fatalf("chain depth %d, want 2", depth)
	}
	for _, c := range []struct {
		off   int64
		depth int
	}{{0, 2}, {1 << 20, 1}, {1536 << 10, 0}, {7 << 20, 0}} {
		m, err := d.BlockStatus(c.off, 512)
		if err != nil || m.Depth != c.depth || !m.Data {
			t.Errorf("BlockStatus(%d) = %+v, %v; want data at depth %d", c.off, m, err, c.depth)
		}
	}
}

// TestQemuTwoGbBoundary: a 5 GiB twoGbMaxExtentSparse (and Flat) disk with
// a write across the 2 GiB extent boundary, compared in streamed chunks.
func TestQemuTwoGbBoundary(t *testing.T) {
	for _, sf := range []string{"twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
		t.Run(sf, func(t *testing.T) {
			dir := t.TempDir()
			sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sf, "big.vmdk", "5G")
			qemuIO(t, dir, "big.vmdk", "write -P 0x77 2047m 2m", "write -P 0x78 4095m 1m", "write -P 0x79 5119m 1m")
			d := mustOpen(t, filepath.Join(dir, "big.vmdk"), Options{})
			if len(d.Extents()) != 3 || d.Size() != 5<<30 {
				t.Fatalf("%d extents, size %d", len(d.Extents()), d.Size())
			}
			raw := filepath.Join(t.TempDir(), "big.raw")
			sh(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "big.vmdk", raw)
			f, err := os.Open(raw)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, b := make([]byte, 8<<20), make([]byte, 8<<20)
			for off := int64(0); off < d.Size(); off += int64(len(a)) {
				if _, err := d.ReadAt(a, off); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(f, b); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) {
					t.Fatalf("content differs from qemu-img's in the 8 MiB at byte %d", off)
				}
			}
			got := make([]byte, 2<<20)
			if _, err := d.ReadAt(got, 2047<<20); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x77}, 2<<20)) {
				t.Fatalf("read across the 2 GiB boundary: %v", err)
			}
		})
	}
}

// TestChainBrokenCID: once the parent's CID changes, reads that fall
// through fail with ErrChainBroken while allocated grains stay readable.
func TestChainBrokenCID(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "base.vmdk", "1M")
	qemuIO(t, dir, "base.vmdk", "write -P 0x01 0 1M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
	qemuIO(t, dir, "top.vmdk", "write -P 0x02 0 64k")
	mustOpen(t, filepath.Join(dir, "top.vmdk"), Options{}) // valid before the change

	desc, _ := os.ReadFile(filepath.Join(dir, "base.vmdk"))
	var out []string
	for _, l := range strings.Split(string(desc), "\n") {
		if strings.HasPrefix(l, "CID=") {
			l = "CID=12345678"
		}
		out = append(out, l)
	}
	writeFile(t, filepath.Join(dir, "base.vmdk"), []byte(strings.Join(out, "\n")))

	d := mustOpen(t, filepath.Join(dir, "top.vmdk"), Options{})
	if !errors.Is(d.ChainError(), ErrChainBroken) {
		t.Fatalf("ChainError = %v", d.ChainError())
	}
	buf := make([]byte, 64<<10)
	if _, err := d.ReadAt(buf, 0); err != nil || buf[0] != 0x02 {
		t.Fatalf("allocated grain: %v", err)
	}
	if _, err := d.ReadAt(buf, 128<<10); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("read through a broken chain: %v, want ErrChainBroken", err)
	}
}

// TestQemuReadsOurReadings closes the loop the other way: an image qemu
// wrote, compared by qemu-img compare against the raw we read from it.
func TestQemuReadsOurReadings(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src.raw"), mixedContent(9, 3<<20))
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw", "s.vmdk")
	d := mustOpen(t, filepath.Join(dir, "s.vmdk"), Options{})
	writeFile(t, filepath.Join(dir, "ours.raw"), readAll(t, d))
	sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "s.vmdk", "ours.raw")
}

// TestQemuLargeFlat (qemu-iotests 059): twoGbMaxExtentFlat of 1000G is 500
// extents, and a 4T monolithicFlat image written at 900G reads back.
func TestQemuLargeFlat(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", "split.vmdk", "1000G")
	qemuIO(t, dir, "split.vmdk", "write -P 0x42 999g 1m")
	d := mustOpen(t, filepath.Join(dir, "split.vmdk"), Options{})
	if n := len(d.Extents()); n != 500 {
		t.Fatalf("1000G twoGbMaxExtentFlat: %d extents, want 500", n)
	}
	buf := make([]byte, 1<<20)
	if _, err := d.ReadAt(buf, 999<<30); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0x42}, 1<<20)) {
		t.Fatalf("read at 999G: %v", err)
	}

	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "big.vmdk", "4T")
	qemuIO(t, dir, "big.vmdk", "write -P 0x43 900g 64k")
	d = mustOpen(t, filepath.Join(dir, "big.vmdk"), Options{})
	if d.Size() != 4<<40 {
		t.Fatalf("size %d", d.Size())
	}
	if _, err := d.ReadAt(buf[:64<<10], 900<<30); err != nil || !bytes.Equal(buf[:64<<10], bytes.Repeat([]byte{0x43}, 64<<10)) {
		t.Fatalf("read at 900G: %v", err)
	}
}

// TestQemuSizeRoundedUp: sizes that are not a sector multiple round up.
func TestQemuSizeRoundedUp(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "odd.vmdk", "1000001")
	d := checkAgainstQemu(t, dir, "odd.vmdk", Options{})
	if d.Size() != 1000448 {
		t.Fatalf("size %d, want 1000448", d.Size())
	}
}
