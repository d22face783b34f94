package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zlib"
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
func streamRead(r io.Reader) ([]byte, error) {
	s, err := NewStreamReader(r)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var out []byte // grown as grains arrive: a hostile header's size costs nothing
	for {
		g, err := s.Next()
		if err == io.EOF {
			return append(out, make([]byte, s.Size()-int64(len(out)))...), nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, make([]byte, g.Offset+int64(len(g.Data))-int64(len(out)))...)
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
			if got, err := streamRead(bytes.NewReader(s.img)); err != nil || !bytes.Equal(got, s.raw) {
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
						got, err = streamRead(bytes.NewReader(s.img[:c]))
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
		if _, err := streamRead(bytes.NewReader(s.img[:cut])); !errors.Is(err, ErrCorrupt) {
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

// endless is a source that sends head, then unit forever.
type endless struct {
	head, unit []byte
	pos        int
}

func (e *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if e.pos < len(e.head) {
			k := copy(p[n:], e.head[e.pos:])
			n, e.pos = n+k, e.pos+k
			continue
		}
		i := (e.pos - len(e.head)) % len(e.unit)
		k := copy(p[n:], e.unit[i:])
		n, e.pos = n+k, e.pos+k
	}
	return n, nil
}

// bareStreamHeader is the header of a streamOptimized image of capacity
// bytes with 64 KiB grains, no descriptor and its directory at the end.
func bareStreamHeader(capacity int64) []byte {
	h := SparseHeader{Version: 3, Flags: flagNewlineCheck | flagCompressed | flagMarkers, Capacity: uint64(capacity / SectorSize),
		GrainSize: 128, NumGTEsPerGT: 512, GDOffset: gdAtEnd, OverHead: 1, CompressAlgorithm: compressionDeflate}
	return h.marshal()
}

// metaMarker is a metadata marker of typ followed by sectors of data.
func metaMarker(typ uint32, sectors uint64, data []byte) []byte {
	b := marker{val: sectors, typ: typ}.encode()
	body := make([]byte, sectors*SectorSize)
	copy(body, data)
	return append(b, body...)
}

// findMarker returns the byte offset of the first metadata marker of typ
// in a stream image, walking its markers from the first grain.
func findMarker(t testing.TB, img []byte, typ uint32) int {
	t.Helper()
	h, err := parseSparseHeader(img[:SectorSize])
	if err != nil {
		t.Fatal(err)
	}
	for pos := int(h.OverHead) * SectorSize; pos+SectorSize <= len(img); {
		m := parseMarker(img[pos : pos+SectorSize])
		switch {
		case m.size != 0:
			pos += (grainMarkerSize + int(m.size) + SectorSize - 1) / SectorSize * SectorSize
		case m.typ == typ && !isZero(img[pos:pos+SectorSize]):
			return pos
		default:
			pos += SectorSize + int(m.val)*SectorSize
		}
	}
	t.Fatalf("no marker of type %d", typ)
	return 0
}

// edit returns a copy of img with f applied.
func edit(img []byte, f func(b []byte)) []byte {
	b := bytes.Clone(img)
	f(b)
	return b
}

// TestHostileStreamMetadata: markers without grains, repeating forever or
// claiming absurd sizes, are refused once past what the header's capacity
// allows, promptly and in bounded memory; metadata that disagrees with the
// grains read, and anything but zero padding after the end-of-stream
// marker, is refused; what is consistent reads exactly.
func TestHostileStreamMetadata(t *testing.T) {
	samples := streamSamples(t)
	ours, qemu := samples[0], samples[1]
	small := bareStreamHeader(64 << 20) // two grain tables
	gtWithGrain := make([]byte, 2048)
	binary.LittleEndian.PutUint32(gtWithGrain, 1000)
	gtAt := findMarker(t, ours.img, markerGT)
	footerAt := findMarker(t, ours.img, markerFooter)
	grain := ours.img[gtAt-SectorSize : gtAt] // a sector of the last grain before the GT
	// tail is a stream of the small header ending in GD, footer and
	// end-of-stream markers, after body, with the directory gd.
	tail := func(body []byte, gd ...uint32) []byte {
		b := append(bytes.Clone(small), body...)
		gdAt := uint64(len(b)/SectorSize + 1)
		b = append(b, metaMarker(markerGD, 1, appendEntries(nil, gd))...)
		h, _ := parseSparseHeader(small)
		h.GDOffset = gdAt
		b = append(b, metaMarker(markerFooter, 1, h.marshal())...)
		return append(b, make([]byte, SectorSize)...)
	}
	emptyGT := metaMarker(markerGT, 4, nil) // its table at sector 2
	cases := []struct {
		name string
		src  func() io.Reader
		want error // nil: reads as raw
		raw  []byte
	}{
		{"no tables", func() io.Reader { return bytes.NewReader(tail(nil, 0, 0)) }, nil, make([]byte, 64<<20)},
		{"two entries share one empty table", func() io.Reader { return bytes.NewReader(tail(emptyGT, 2, 2)) }, nil, make([]byte, 64<<20)},
		{"an entry names an empty table never sent", func() io.Reader { return bytes.NewReader(tail(emptyGT, 2, 40)) }, ErrCorrupt, nil},
		{"an empty table the directory does not name", func() io.Reader { return bytes.NewReader(tail(emptyGT, 0, 0)) }, ErrCorrupt, nil},
		{"GT markers forever", func() io.Reader { return &endless{head: small, unit: metaMarker(markerGT, 4, nil)} }, ErrCorrupt, nil},
		{"GT markers listing grains never sent", func() io.Reader { return &endless{head: small, unit: metaMarker(markerGT, 4, gtWithGrain)} }, ErrCorrupt, nil},
		{"GT marker of 2^40 sectors", func() io.Reader { return &endless{head: small, unit: marker{val: 1 << 40, typ: markerGT}.encode()} }, ErrCorrupt, nil},
		{"GD markers forever", func() io.Reader { return &endless{head: small, unit: metaMarker(markerGD, 1, nil)} }, ErrCorrupt, nil},
		{"footer markers forever", func() io.Reader { return &endless{head: small, unit: metaMarker(markerFooter, 1, small)} }, ErrCorrupt, nil},
		{"unknown markers forever", func() io.Reader { return &endless{head: small, unit: metaMarker(9, 0, nil)} }, ErrCorrupt, nil},
		{"zeros forever", func() io.Reader { return &endless{head: small, unit: make([]byte, SectorSize)} }, ErrCorrupt, nil},
		{"one grain forever", func() io.Reader { return &endless{head: ours.img[:findFirstGrain(t, ours.img)], unit: grain} }, ErrUnsupported, nil}, // out of order
		{"a grain table entry moved", func() io.Reader {
			return bytes.NewReader(edit(ours.img, func(b []byte) {
				v := binary.LittleEndian.Uint32(b[gtAt+SectorSize:])
				binary.LittleEndian.PutUint32(b[gtAt+SectorSize:], v+1)
			}))
		}, ErrCorrupt, nil},
		{"footer capacity differs", func() io.Reader {
			return bytes.NewReader(edit(ours.img, func(b []byte) { binary.LittleEndian.PutUint64(b[footerAt+SectorSize+12:], 1<<20) }))
		}, ErrCorrupt, nil},
		{"footer names another directory", func() io.Reader {
			return bytes.NewReader(edit(ours.img, func(b []byte) { binary.LittleEndian.PutUint64(b[footerAt+SectorSize+56:], 3) }))
		}, ErrCorrupt, nil},
		{"qemu directory entry moved", func() io.Reader {
			return bytes.NewReader(edit(qemu.img, func(b []byte) {
				gd := int(binary.LittleEndian.Uint64(b[56:])) * SectorSize
				binary.LittleEndian.PutUint32(b[gd:], binary.LittleEndian.Uint32(b[gd:])+4)
			}))
		}, ErrCorrupt, nil},
		{"a grain after the end-of-stream marker", func() io.Reader { return bytes.NewReader(append(bytes.Clone(ours.img), grain...)) }, ErrCorrupt, nil},
		{"2 MiB of zeros after the end-of-stream marker", func() io.Reader { return bytes.NewReader(append(bytes.Clone(ours.img), make([]byte, 2<<20)...)) }, ErrCorrupt, nil},
		{"8 KiB of zero padding after the end-of-stream marker", func() io.Reader { return bytes.NewReader(append(bytes.Clone(ours.img), make([]byte, 8<<10+100)...)) }, nil, ours.raw},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []byte
			// The disk read back is the test's own copy: a success may hold it.
			err := withinBound(t, bound{Time: 2 * time.Second, Mem: 8<<20 + 2*int64(len(c.raw))}, func() (err error) {
				got, err = streamRead(c.src())
				return err
			})
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("%v, want the disk", err)
			case c.want == nil:
				sameBytes(t, "content", got, c.raw)
			case !errors.Is(err, c.want):
				t.Fatalf("%v, want %v", err, c.want)
			default:
				t.Log(err)
			}
		})
	}
}

// findFirstGrain is the byte offset of a stream image's first grain marker.
func findFirstGrain(t testing.TB, img []byte) int {
	h, err := parseSparseHeader(img[:SectorSize])
	if err != nil {
		t.Fatal(err)
	}
	return int(h.OverHead) * SectorSize
}

// TestHostileStreamWriterPartialGrain: a StreamWriter closed after a
// write that stopped inside a grain writes an image every reader reads as
// what was written followed by zeros (its final grain padded to a whole
// grain, or to the disk's end), and qemu-img agrees.
func TestHostileStreamWriterPartialGrain(t *testing.T) {
	const grain = 8 << 10
	dir := t.TempDir()
	for _, c := range []struct {
		size    int64
		written int
		at      int64 // WriteAt offset of the write
	}{
		{1 << 20, 1, 0}, {1 << 20, 3000, 0}, {1 << 20, grain + 1, 0}, {1 << 20, 2*grain + 77, 0},
		{1 << 20, 100, 5*grain + 512},                                        // a write after a hole, stopping mid-grain
		{3*grain + 1024, 2*grain + 512, 0}, {3*grain + 1024, 700, 3 * grain}, // the disk's own partial last grain
	} {
		name := fmt.Sprintf("size%d-at%d-len%d", c.size, c.at, c.written)
		t.Run(name, func(t *testing.T) {
			want := make([]byte, c.size)
			copy(want[c.at:], mixedContent(int64(c.written), c.written))
			want[c.at] = 1 // never an all-zero grain
			var img bytes.Buffer
			err := withinBound(t, bound{Time: 2 * time.Second, Mem: 8 << 20}, func() error {
				w, err := NewStreamWriter(&img, StreamOptions{ImageOptions: ImageOptions{Size: c.size, GrainSize: grain}})
				if err != nil {
					return err
				}
				if _, err := w.WriteAt(want[c.at:c.at+int64(c.written)], c.at); err != nil {
					return err
				}
				return w.Close()
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := streamRead(bytes.NewReader(img.Bytes()))
			if err != nil {
				t.Fatalf("StreamReader: %v", err)
			}
			sameBytes(t, "StreamReader", got, want)
			d, err := OpenReaderAt(bytes.NewReader(img.Bytes()), int64(img.Len()), "w.vmdk")
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "OpenReaderAt", readAll(t, d), want)
			writeFile(t, filepath.Join(dir, name+".vmdk"), img.Bytes())
			sameBytes(t, "qemu-img", qemuRaw(t, dir, name+".vmdk"), want)
		})
	}
}

// grainMarkers are the byte offsets of a stream image's grain markers.
func grainMarkers(img []byte) []int {
	h, _ := parseSparseHeader(img[:SectorSize])
	var out []int
	for pos := int(h.OverHead) * SectorSize; pos+SectorSize <= len(img); {
		m := parseMarker(img[pos : pos+SectorSize])
		switch {
		case m.size != 0:
			out = append(out, pos)
			pos += (grainMarkerSize + int(m.size) + SectorSize - 1) / SectorSize * SectorSize
		case m.typ == markerEOS:
			pos += SectorSize
		default:
			pos += SectorSize + int(m.val)*SectorSize
		}
	}
	return out
}

// replaceGrain returns img with the compressed data of the grain marker at
// pos replaced by data (which must fit in the grain's sectors).
func replaceGrain(t testing.TB, img []byte, pos int, data []byte) []byte {
	t.Helper()
	m := parseMarker(img[pos:])
	room := (grainMarkerSize+int(m.size)+SectorSize-1)/SectorSize*SectorSize - grainMarkerSize
	if len(data) > room {
		t.Fatalf("%d bytes do not fit in %d", len(data), room)
	}
	return edit(img, func(b []byte) {
		binary.LittleEndian.PutUint32(b[pos+8:], uint32(len(data)))
		clear(b[pos+grainMarkerSize : pos+grainMarkerSize+room])
		copy(b[pos+grainMarkerSize:], data)
	})
}

func zlibOf(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// TestHostileStreamCheck: Check inflates every compressed grain and
// measures grains to the byte: a zlib bomb, a grain that inflates short,
// a bad Adler-32, a cut deflate stream, garbage, files a few bytes short
// of their last grain, and a stream a sequential import would refuse are
// corruptions; the intact images are clean.
func TestHostileStreamCheck(t *testing.T) {
	dir := t.TempDir()
	raw := mixedContent(11, 1<<20)
	copy(raw, bytes.Repeat([]byte("table "), 20000)) // the first grains compress
	ours := writeStream(t, raw, StreamOptions{})
	first := grainMarkers(ours)[0]
	firstData := ours[first+grainMarkerSize : first+grainMarkerSize+int(parseMarker(ours[first:]).size)]
	writeFile(t, filepath.Join(dir, "in.raw"), raw)
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "in.raw", "q.vmdk")
	sh(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "in.raw", "s.vmdk")
	qemuStream, sparse := readFileT(t, filepath.Join(dir, "q.vmdk")), readFileT(t, filepath.Join(dir, "s.vmdk"))
	qemuLast := grainMarkers(qemuStream)[len(grainMarkers(qemuStream))-1]
	qemuLastEnd := qemuLast + grainMarkerSize + int(parseMarker(qemuStream[qemuLast:]).size)
	badSum := bytes.Clone(firstData)
	badSum[len(badSum)-1] ^= 0xff
	garbage := mixedContent(99, 300)
	garbage[0], garbage[1] = 0x78, 0x9c
	cases := []struct {
		name  string
		img   []byte
		clean bool
	}{
		{"ours intact", ours, true},
		{"qemu-img stream intact", qemuStream, true},
		{"sparse intact", sparse, true},
		{"zlib bomb", replaceGrain(t, ours, first, zlibOf(t, make([]byte, 256<<10))), false},
		{"inflates short", replaceGrain(t, ours, first, zlibOf(t, raw[:32<<10])), false},
		{"bad Adler-32", replaceGrain(t, ours, first, badSum), false},
		{"deflate cut short", replaceGrain(t, ours, first, firstData[:len(firstData)/2]), false},
		{"garbage", replaceGrain(t, ours, first, garbage), false},
		{"qemu-img stream 3 bytes short of its last grain", qemuStream[:qemuLastEnd-3], false},
		{"sparse 3 bytes short of its last grain", sparse[:len(sparse)-3], false},
		// The grain directory reads it, a stream import refuses it.
		{"qemu-img stream with data after its end", append(bytes.Clone(qemuStream), bytes.Repeat([]byte{7}, SectorSize)...), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.vmdk")
			writeFile(t, path, c.img)
			var r *CheckReport
			err := withinBound(t, bound{Time: 5 * time.Second, Mem: 16 << 20}, func() (err error) {
				r, err = Check(t.Context(), path, CheckOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if clean := len(r.Corruptions) == 0; clean != c.clean {
				t.Fatalf("corruptions %q, want clean %v", r.Corruptions, c.clean)
			}
			t.Logf("%q", r.Corruptions)
		})
	}
}
