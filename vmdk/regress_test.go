package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Regression tests for bugs found in review.

// Grains that compress below a sector (a constant pattern) must not make
// the sequential reader skip into the next grain.
func TestStreamReaderSmallGrains(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.raw"), bytes.Repeat([]byte{0xab}, 1<<20))
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "p.raw", "p.vmdk")
	img := readFileT(t, filepath.Join(dir, "p.vmdk"))
	sameBytes(t, "StreamReader", readStream(t, bytes.NewReader(img), 1<<20), bytes.Repeat([]byte{0xab}, 1<<20))
	ours := writeStream(t, bytes.Repeat([]byte{0xcd}, 3<<20), StreamOptions{})
	sameBytes(t, "StreamReader on ours", readStream(t, bytes.NewReader(ours), 3<<20), bytes.Repeat([]byte{0xcd}, 3<<20))
}

// A compressed image without markers whose grain table points past the end
// of the file is corrupt, not a crash.
func TestCompressedNoMarkerPastEOF(t *testing.T) {
	img := readFileT(t, "testdata/stream-qemu.vmdk")
	d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	e := d.extents[0].ext.(*sparseExtent)
	gt := int64(e.gd[0]) * SectorSize
	binary.LittleEndian.PutUint32(img[8:], flagCompressed|flagNewlineCheck) // no markers
	for j := int64(0); j < 4; j++ {
		binary.LittleEndian.PutUint32(img[gt+j*4:], 1000000)
	}
	d, err = OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4096, 256 << 10} {
		if _, err := d.ReadAt(make([]byte, n), 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("read of %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
}

func TestProbeDescriptorKeyOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "d-flat.vmdk"), bytes.Repeat([]byte{1}, 1024))
	writeFile(t, filepath.Join(dir, "d.vmdk"), []byte("CID=00000001\nparentCID=ffffffff\nversion=1\ncreateType=\"monolithicFlat\"\nRW\t2\tFLAT\t\"d-flat.vmdk\"\t0\n"))
	d := mustOpen(t, filepath.Join(dir, "d.vmdk"), Options{})
	sameBytes(t, "descriptor with version later and tabs", readAll(t, d), bytes.Repeat([]byte{1}, 1024))
}

func TestOpenReaderAtChild(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
	img := readFileT(t, filepath.Join(dir, "top.vmdk"))
	if _, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "top.vmdk"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("%v, want ErrUnsupported", err)
	}
}

func TestRootRelativeAndAbsolute(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "a"), 0o755)
	sh(t, filepath.Join(root, "a"), "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "d.vmdk", "1M")
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(root)
	for _, c := range []struct{ path, root string }{
		{"a/d.vmdk", root}, {filepath.Join(root, "a", "d.vmdk"), "."}, {"a/d.vmdk", "."},
	} {
		d, err := Open(c.path, Options{Root: c.root})
		if err != nil {
			t.Errorf("Open(%s, Root %s): %v", c.path, c.root, err)
			continue
		}
		d.Close()
	}
}

func TestFormatKeepsValues(t *testing.T) {
	d := &Descriptor{Version: 1, CID: 1, ParentCID: NoParentCID, CreateType: "monolithicFlat",
		ParentFileNameHint: `C:\vms\base.vmdk`, DDB: []KeyValue{{"ddb.comment", `say "hi"` + "\nRW 1 FLAT \"x\" 0"}}}
	got, err := ParseDescriptor(d.Format())
	if err != nil {
		t.Fatal(err)
	}
	if got.ParentFileNameHint != `C:\vms\base.vmdk` || len(got.Extents) != 0 || got.DDBValue("ddb.comment") != `say hiRW 1 FLAT x 0` {
		t.Fatalf("round trip: %+v", got)
	}
}

// Close returns even while the source stalls.
func TestStreamReaderCloseOnStall(t *testing.T) {
	img := writeStream(t, mixedContent(3, 1<<20), StreamOptions{})
	pr, pw := io.Pipe()
	go pw.Write(img[:1024+20*512]) // header and descriptor, then nothing
	s, err := NewStreamReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hangs while the source stalls")
	}
	pw.CloseWithError(io.ErrClosedPipe)
}
