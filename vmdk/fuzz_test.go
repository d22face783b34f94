package vmdk

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Seeds come from testdata/ (small images written by qemu-img, VMDKstream
// and hand-made descriptors) plus the corpora under testdata/fuzz/.
func addSeeds(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		files, _ := filepath.Glob(filepath.Join("testdata", p))
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzParseDescriptor: any text parses or fails cleanly, and a parsed
// descriptor survives Format and a second parse unchanged in its meaning.
func FuzzParseDescriptor(f *testing.F) {
	addSeeds(f, "*.txt")
	f.Add([]byte("version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"custom\"\nRW 100 FLAT \"a b.raw\" 0\nRDONLY 8 ZERO\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		d, err := ParseDescriptor(text)
		if err != nil {
			return
		}
		d2, err := ParseDescriptor(d.Format())
		if err != nil {
			t.Fatalf("Format output does not parse: %v\n%s", err, d.Format())
		}
		if d2.CID != d.CID || d2.ParentCID != d.ParentCID || d2.Sectors() != d.Sectors() || len(d2.Extents) != len(d.Extents) {
			t.Fatalf("round trip changed the descriptor:\n%+v\n%+v", d, d2)
		}
	})
}

// FuzzOpen: any bytes open or fail with an error; whatever opens reads its
// whole content without panicking and reports consistent block status.
func FuzzOpen(f *testing.F) {
	addSeeds(f, "*.vmdk")
	small := mixedContent(1, 40<<10)
	for _, l := range streamLayouts {
		f.Add(buildStream(f, small, l, 16))
	}
	f.Add(buildCOWD(f, small, 16))
	f.Fuzz(func(t *testing.T, img []byte) {
		d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "fuzz.vmdk")
		if err != nil {
			return
		}
		if d.Size() > 64<<20 {
			return // valid but too big to read whole in a fuzz iteration
		}
		buf := make([]byte, 256<<10)
		for off := int64(0); off < d.Size(); off += int64(len(buf)) {
			if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
				break
			}
		}
		for off := int64(0); off < d.Size(); {
			m, err := d.BlockStatus(off, d.Size()-off)
			if err != nil {
				break
			}
			if m.Length <= 0 || m.Offset != off {
				t.Fatalf("BlockStatus(%d) = %+v", off, m)
			}
			off += m.Length
		}
	})
}

// FuzzStreamReader: any byte stream yields grains inside the disk or an
// error, never a panic.
func FuzzStreamReader(f *testing.F) {
	addSeeds(f, "stream*.vmdk")
	for _, l := range streamLayouts {
		f.Add(buildStream(f, mixedContent(2, 40<<10), l, 16))
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		s, err := NewStreamReader(bytes.NewReader(img))
		if err != nil {
			return
		}
		defer s.Close()
		for {
			g, err := s.Next()
			if err != nil {
				return
			}
			if g.Offset < 0 || g.Offset+int64(len(g.Data)) > s.Size() {
				t.Fatalf("grain [%d, +%d) outside a %d-byte disk", g.Offset, len(g.Data), s.Size())
			}
		}
	})
}
