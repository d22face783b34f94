package vmdk

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The hostile stream class: a sequential stream must prove it ended (no
// truncated source reads as a disk with its tail zeroed), its metadata is
// bounded by the header's capacity, and Check inflates every compressed
// grain.

// streamSample is a small streamOptimized image and the disk it holds.
type streamSample struct {
	name string
	img  []byte
	raw  []byte
}

// streamSamples are small streams from every writer the reader must prove
// the end of: ours (VMware's layout), qemu-img (tables preallocated, no
// markers), Debian's VMDKstream (footer), and the fixture's open-vmdk and
// markers-only layouts.
func streamSamples(t testing.TB) []streamSample {
	t.Helper()
	raw := mixedContent(7, 96<<10+3*512) // partial last grain
	copy(raw[8<<10:], bytes.Repeat([]byte("grain"), 2000))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "in.raw"), raw)
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "in.raw", "q.vmdk")
	vs := readFileT(t, filepath.Join("testdata", "stream-vmdkstream.vmdk"))
	vsDisk, err := OpenReaderAt(bytes.NewReader(vs), int64(len(vs)), "vs.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	return []streamSample{
		{"ours", writeStream(t, raw, StreamOptions{ImageOptions: ImageOptions{GrainSize: 8 << 10}}), raw},
		{"qemu-img", readFileT(t, filepath.Join(dir, "q.vmdk")), raw},
		{"vmdkstream", vs, readAll(t, vsDisk)},
		{"open-vmdk", buildStream(t, raw, streamLayouts[1], 16), raw},
		{"markers-only", buildStream(t, raw, streamLayouts[2], 16), raw},
	}
}

// streamRead reads a whole stream through StreamReader.
func streamRead(img []byte) ([]byte, error) {
	s, err := NewStreamReader(bytes.NewReader(img))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	out := make([]byte, s.Size())
	for {
		g, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		copy(out[g.Offset:], g.Data)
	}
}

// TestHostileStreamTruncated cuts each sample at every sector boundary
// (and 100 bytes past every 8th): each cut either reads the whole disk exactly (a
// cut in qemu's zero padding loses nothing) or fails with ErrCorrupt and
// io.ErrUnexpectedEOF, within a bound. Never a disk with its tail zeroed.
func TestHostileStreamTruncated(t *testing.T) {
	for _, s := range streamSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			if got, err := streamRead(s.img); err != nil || !bytes.Equal(got, s.raw) {
				t.Fatalf("the whole stream: %v", err)
			}
			whole := 0
			for cut := 0; cut < len(s.img); cut += SectorSize {
				cuts := []int{cut}
				if cut%(8*SectorSize) == 0 {
					cuts = append(cuts, cut+100)
				}
				for _, c := range cuts {
					var got []byte
					err := withinBound(t, bound{Time: 2 * time.Second, Mem: 4 << 20}, func() (err error) {
						got, err = streamRead(s.img[:c])
						return err
					})
					switch {
					case err == nil && bytes.Equal(got, s.raw):
						whole++
					case err == nil:
						t.Errorf("cut at byte %d of %d: read as success with different content", c, len(s.img))
					case !errors.Is(err, ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF):
						t.Errorf("cut at byte %d of %d: %v; want ErrCorrupt and io.ErrUnexpectedEOF", c, len(s.img), err)
					}
				}
			}
			t.Logf("%d cuts of %d bytes lose nothing", whole, len(s.img))
		})
	}
}

// TestHostileStreamTruncatedQemu: the same bytes cut in the middle of
// the grains are refused by StreamReader, by our random-access reader and
// by qemu-img (except where qemu reads a table past the end of the file
// as zeros: the open-vmdk layout, whose tables follow their grains).
func TestHostileStreamTruncatedQemu(t *testing.T) {
	dir := t.TempDir()
	for _, s := range streamSamples(t) {
		cut := len(s.img) / 2 / SectorSize * SectorSize
		name := filepath.Join(dir, s.name+".vmdk")
		writeFile(t, name, s.img[:cut])
		out, err := exec.Command(tool(t, "qemu-img"), "convert", "-f", "vmdk", "-O", "raw", name, filepath.Join(dir, "out.raw")).CombinedOutput()
		if qemuRefuses := s.name != "open-vmdk"; qemuRefuses != (err != nil) {
			t.Errorf("%s cut at %d: qemu-img convert: %v %s", s.name, cut, err, out)
		}
		if _, err := streamRead(s.img[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s cut at %d: StreamReader: %v", s.name, cut, err)
		}
		d, err := Open(name, Options{})
		if err == nil {
			_, err = d.ReadAt(make([]byte, d.Size()), 0)
			d.Close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s cut at %d: Open and ReadAt: %v", s.name, cut, err)
		}
	}
}
