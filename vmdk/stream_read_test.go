package vmdk

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// streamLayout selects which real writer's layout buildStream imitates.
type streamLayout struct {
	name       string
	footer     bool // GD_AT_END header, footer marker + footer (VMware, VMDKstream)
	gtMarkers  bool // GT/GD metadata markers (VMware)
	headerGD   bool // GD preallocated after the descriptor, header rewritten (open-vmdk)
	eos        bool // end-of-stream marker
	rawDeflate bool // grains as raw deflate instead of zlib
}

var streamLayouts = []streamLayout{
	{name: "vmware", footer: true, gtMarkers: true, eos: true},
	{name: "open-vmdk", headerGD: true, gtMarkers: true, eos: true},
	{name: "markers-only", eos: true}, // GD_AT_END, no footer: index by scanning
	{name: "raw-deflate", footer: true, gtMarkers: true, eos: true, rawDeflate: true},
}

// buildStream writes raw as a streamOptimized image in the given layout,
// skipping all-zero grains. It is a test fixture, independent of the
// package's code.
func buildStream(t testing.TB, raw []byte, l streamLayout, grainSectors uint64) []byte {
	t.Helper()
	grain := grainSectors * 512
	sectors := uint64((len(raw) + 511) / 512)
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n"+
		"# Extent description\nRDONLY %d SPARSE \"original-name.vmdk\"\n\nddb.adapterType = \"lsilogic\"\n", sectors)
	descSectors := uint64(len(desc)+511) / 512
	gtCount := (sectors + grainSectors*512 - 1) / (grainSectors * 512)
	gdSectors := (gtCount*4 + 511) / 512
	h := SparseHeader{Version: 3, Flags: flagNewlineCheck | flagCompressed | flagMarkers, Capacity: sectors,
		GrainSize: grainSectors, DescriptorOffset: 1, DescriptorSize: descSectors, NumGTEsPerGT: 512,
		GDOffset: gdAtEnd, CompressAlgorithm: compressionDeflate}
	h.OverHead = 1 + descSectors
	if l.headerGD {
		h.GDOffset = h.OverHead
		h.OverHead += gdSectors
	}
	var out bytes.Buffer
	out.Write(h.marshal())
	out.WriteString(desc)
	pad := func() { out.Write(make([]byte, (512-out.Len()%512)%512)) }
	pad()
	out.Write(make([]byte, int(h.OverHead)*512-out.Len()))
	meta := func(typ uint32, data []byte) uint64 {
		var m [512]byte
		binary.LittleEndian.PutUint64(m[:], uint64((len(data)+511)/512))
		binary.LittleEndian.PutUint32(m[12:], typ)
		if !l.gtMarkers && typ != markerFooter {
			return 0 // a writer without metadata markers writes no inline tables
		}
		out.Write(m[:])
		at := uint64(out.Len() / 512)
		out.Write(data)
		pad()
		return at
	}
	gd := make([]byte, gtCount*4)
	for gti := uint64(0); gti < gtCount; gti++ {
		gt := make([]byte, 512*4)
		any := false
		for j := uint64(0); j < 512; j++ {
			off := (gti*512 + j) * grain
			if off >= uint64(len(raw)) {
				break
			}
			data := raw[off:min(off+grain, uint64(len(raw)))]
			if bytes.Equal(data, make([]byte, len(data))) {
				continue
			}
			var z bytes.Buffer
			var w io.WriteCloser
			if l.rawDeflate {
				w, _ = flate.NewWriter(&z, flate.BestSpeed)
			} else {
				w = zlib.NewWriter(&z)
			}
			w.Write(data)
			w.Close()
			binary.LittleEndian.PutUint32(gt[j*4:], uint32(out.Len()/512))
			var m [12]byte
			binary.LittleEndian.PutUint64(m[:], off/512)
			binary.LittleEndian.PutUint32(m[8:], uint32(z.Len()))
			out.Write(m[:])
			out.Write(z.Bytes())
			pad()
			any = true
		}
		if any {
			binary.LittleEndian.PutUint32(gd[gti*4:], uint32(meta(markerGT, gt)))
		}
	}
	if l.headerGD {
		b := out.Bytes()
		copy(b[h.GDOffset*512:], gd)
		copy(b, h.marshal())
	} else if l.footer {
		gdAt := meta(markerGD, gd)
		f := h
		f.GDOffset = gdAt
		meta(markerFooter, f.marshal())
	}
	if l.eos {
		out.Write(make([]byte, 512))
	}
	return out.Bytes()
}

func TestStreamLayouts(t *testing.T) {
	raw := mixedContent(3, 10<<20+5*512) // 3 grain tables of 8 KiB grains, partial last grain
	for _, l := range streamLayouts {
		t.Run(l.name, func(t *testing.T) {
			img := buildStream(t, raw, l, 16)
			d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "OpenReaderAt", readAll(t, d), raw)
			if d.CID() != 0x1234abcd || d.CreateType() != "streamOptimized" {
				t.Errorf("CID %08x createType %q", d.CID(), d.CreateType())
			}
			sameBytes(t, "StreamReader", readStream(t, bytes.NewReader(img), len(raw)), raw)
		})
	}
	// qemu-img reads the layouts that keep a grain directory.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "raw"), raw)
	for _, l := range streamLayouts[:2] {
		writeFile(t, filepath.Join(dir, l.name+".vmdk"), buildStream(t, raw, l, 16))
		sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", l.name+".vmdk", "raw")
	}
}

// readStream assembles a disk's content from a StreamReader.
func readStream(t testing.TB, r io.Reader, size int) []byte {
	t.Helper()
	s, err := NewStreamReader(r)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != int64(size) {
		t.Fatalf("stream size %d, want %d", s.Size(), size)
	}
	out := make([]byte, size)
	for {
		g, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		copy(out[g.Offset:], g.Data)
	}
}

// TestStreamVMDKstream reads images from Debian's python3-vmdkstream, an
// independent writer (footer layout), from a file and from a pipe.
func TestStreamVMDKstream(t *testing.T) {
	dir := t.TempDir()
	raw := mixedContent(5, 9<<20)
	writeFile(t, filepath.Join(dir, "in.raw"), raw)
	py := "/usr/bin/python3"
	cmd := exec.Command(py, "-c", "import VMDKstream,sys; VMDKstream.convert_to_stream(sys.argv[1], sys.argv[2])", "in.raw", "out.vmdk")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("VMDKstream (install python3-vmdkstream): %v\n%s", err, out)
	}
	d := mustOpen(t, filepath.Join(dir, "out.vmdk"), Options{})
	sameBytes(t, "Open", readAll(t, d), raw)

	cat := exec.Command("cat", filepath.Join(dir, "out.vmdk"))
	pipe, err := cat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "StreamReader from a pipe", readStream(t, pipe, len(raw)), raw)
	cat.Wait()
}

// TestStreamQemu reads qemu-img's stream layout (tables preallocated, no
// GT/GD markers, no footer, no end-of-stream marker) sequentially.
func TestStreamQemu(t *testing.T) {
	dir := t.TempDir()
	raw := mixedContent(6, 5<<20+512)
	writeFile(t, filepath.Join(dir, "in.raw"), raw)
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "in.raw", "q.vmdk")
	img := readFileT(t, filepath.Join(dir, "q.vmdk"))
	sameBytes(t, "StreamReader", readStream(t, bytes.NewReader(img), len(raw)), raw)
}

// TestStreamTruncated: a stream cut short is an error, never zeros.
func TestStreamTruncated(t *testing.T) {
	raw := mixedContent(7, 3<<20)
	for _, l := range []streamLayout{streamLayouts[0], streamLayouts[2]} {
		img := buildStream(t, raw, l, 128)
		cut := img[:len(img)/2/512*512]
		if d, err := OpenReaderAt(bytes.NewReader(cut), int64(len(cut)), "cut.vmdk"); err == nil {
			_, err = io.Copy(io.Discard, io.NewSectionReader(d, 0, d.Size()))
			if err == nil {
				t.Errorf("%s: truncated stream opened and read without error", l.name)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", l.name, err)
		}
		s, err := NewStreamReader(bytes.NewReader(cut))
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = s.Next()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: StreamReader on a truncated stream: %v, want ErrCorrupt", l.name, err)
		}
	}
}

// TestConcurrentReads: parallel ReadAt calls on a compressed image agree
// with the content (run under -race by make test).
func TestConcurrentReads(t *testing.T) {
	raw := mixedContent(8, 6<<20)
	img := buildStream(t, raw, streamLayouts[0], 128)
	d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "c.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			buf := make([]byte, 5000+w*777)
			for off := int64(w * 100); off+int64(len(buf)) <= d.Size(); off += 97 << 10 {
				if _, err := d.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, raw[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("worker %d: wrong data at %d", w, off)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

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
