package vmdk

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"
)

// writeStream writes raw through a StreamWriter in uneven pieces, skipping
// the zero ranges with WriteAt as convert does.
func writeStream(t testing.TB, raw []byte, opts StreamOptions) []byte {
	t.Helper()
	var out bytes.Buffer
	opts.Size = int64(len(raw))
	w, err := NewStreamWriter(&out, opts)
	if err != nil {
		t.Fatal(err)
	}
	step := 300<<10 + 4096
	for off := 0; off < len(raw); off += step {
		piece := raw[off:min(off+step, len(raw))]
		if isZero(piece) {
			continue
		}
		if _, err := w.WriteAt(piece, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestStreamWriter: what we write reads back through our reader (random
// access and sequential), qemu-img and libvmdk, in VMware's layout.
func TestStreamWriter(t *testing.T) {
	dir := t.TempDir()
	raw := mixedContent(31, 40<<20+3*512) // two grain tables, partial last grain
	img := writeStream(t, raw, StreamOptions{ExtentFileName: "s.vmdk"})
	writeFile(t, filepath.Join(dir, "s.vmdk"), img)
	writeFile(t, filepath.Join(dir, "s.raw"), raw)

	d := mustOpen(t, filepath.Join(dir, "s.vmdk"), Options{})
	sameBytes(t, "Open", readAll(t, d), raw)
	if h := d.Header(); h.Version != 3 || !h.Compressed() || !h.HasMarkers() || h.GDOffset == gdAtEnd {
		t.Fatalf("footer header %+v", h)
	}
	if first, _ := parseSparseHeader(img[:512]); first.GDOffset != gdAtEnd {
		t.Fatalf("header gdOffset %d, want GD_AT_END", first.GDOffset)
	}
	if m := parseMarker(img[len(img)-1536:]); m.typ != markerFooter || m.size != 0 {
		t.Fatalf("no footer marker 1536 bytes before the end: %+v", m)
	}
	if !isZero(img[len(img)-512:]) {
		t.Fatal("no end-of-stream marker")
	}
	sameBytes(t, "StreamReader", readStream(t, bytes.NewReader(img), len(raw)), raw)
	sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "s.vmdk", "s.raw")
	sh(t, dir, "qemu-img", "check", "-f", "vmdk", "s.vmdk")
	info := qemuImgInfo(t, dir, "s.vmdk")
	if info.FormatSpecific.Data.CreateType != string(StreamOptimized) || info.FormatSpecific.Data.CID != d.CID() {
		t.Fatalf("qemu-img info: %+v", info.FormatSpecific.Data)
	}

	// libvmdk (python3-libvmdk), an independent C reader.
	py := `import pyvmdk, sys, hashlib
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
n = h.get_media_size(); out = bytearray()
while len(out) < n: out += h.read_buffer(min(1 << 20, n - len(out)))
sys.stdout.write(hashlib.sha256(out).hexdigest())`
	cmd := exec.Command("/usr/bin/python3", "-c", py, "s.vmdk")
	cmd.Dir = dir
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("libvmdk (install python3-libvmdk): %v", err)
	}
	want := sh(t, dir, "sha256sum", "s.raw")[:64]
	if string(got) != string(want) {
		t.Fatalf("libvmdk reads %s, want %s", got, want)
	}
}

// TestStreamWriterDeterministic: the grains, tables and footer do not depend
// on scheduling (only the descriptor's random IDs differ between runs).
func TestStreamWriterDeterministic(t *testing.T) {
	raw := mixedContent(32, 9<<20)
	a := writeStream(t, raw, StreamOptions{Workers: 1})
	b := writeStream(t, raw, StreamOptions{Workers: 8})
	h, _ := parseSparseHeader(a)
	start := int(h.OverHead) * SectorSize
	if len(a) != len(b) || !bytes.Equal(a[start:], b[start:]) {
		t.Fatal("output depends on the number of workers")
	}
}

// TestStreamWriterLevels: higher levels make smaller output that reads the same.
func TestStreamWriterLevels(t *testing.T) {
	raw := mixedContent(33, 4<<20)
	fast := writeStream(t, raw, StreamOptions{Level: 1})
	best := writeStream(t, raw, StreamOptions{Level: 9})
	if len(best) > len(fast) {
		t.Errorf("level 9 (%d bytes) larger than level 1 (%d)", len(best), len(fast))
	}
	for _, img := range [][]byte{fast, best} {
		d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "l.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "level", readAll(t, d), raw)
	}
	if _, err := NewStreamWriter(&bytes.Buffer{}, StreamOptions{ImageOptions: ImageOptions{Size: 1 << 20}, Level: 10}); err == nil {
		t.Error("level 10 accepted")
	}
}
