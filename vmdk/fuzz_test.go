package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
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

// FuzzParseDescriptor: any text parses or fails cleanly, and whatever
// parses, Format reproduces: parse(format(d)) is d, field for field.
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
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("parse(format(d)) differs from d:\n%+v\n%+v\n%s", d, d2, d.Format())
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
// error, never a panic; and a stream it reads to a proven end, the
// random-access reader either refuses or reads as the same disk.
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
		var got []byte // grown as grains arrive: a header's size costs nothing
		for {
			g, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			if g.Offset < 0 || g.Offset+int64(len(g.Data)) > s.Size() {
				t.Fatalf("grain [%d, +%d) outside a %d-byte disk", g.Offset, len(g.Data), s.Size())
			}
			got = append(got, make([]byte, g.Offset+int64(len(g.Data))-int64(len(got)))...)
			copy(got[g.Offset:], g.Data)
		}
		d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "fuzz.vmdk")
		if err != nil || d.Size() != s.Size() || d.Size() > 64<<20 {
			return
		}
		want := make([]byte, d.Size())
		if _, err := d.ReadAt(want, 0); err != nil && err != io.EOF {
			return
		}
		got = append(got, make([]byte, s.Size()-int64(len(got)))...)
		if !bytes.Equal(got, want) {
			t.Fatal("StreamReader and the random-access reader read the same bytes as different disks")
		}
	})
}

// FuzzStreamRoundTrip: for fuzzed content and write patterns (holes,
// writes that stop inside a grain, a partial last grain), what StreamWriter
// writes, StreamReader and the random-access reader both read as exactly
// what was written, zeros elsewhere.
func FuzzStreamRoundTrip(f *testing.F) {
	f.Add(uint16(40), []byte{0, 0, 200, 7, 3, 1, 0, 9})
	f.Add(uint16(511), []byte{1, 64, 0, 0, 200, 255, 255, 1, 0, 0, 1, 2})
	f.Add(uint16(17), []byte{0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, sectors uint16, ops []byte) {
		const grain = 8 << 10
		size := (int64(sectors)%512 + 1) * SectorSize // up to 256 KiB: 32 grains
		want := make([]byte, size)
		var img bytes.Buffer
		w, err := NewStreamWriter(&img, StreamOptions{ImageOptions: ImageOptions{Size: size, GrainSize: grain}, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		// Each op is 4 bytes: a gap before the write (in 61-byte steps), its
		// length (up to 16 KiB), and a fill: even fills repeat a byte, odd
		// ones vary along the write.
		var pos int64
		for ; len(ops) >= 4 && pos < size; ops = ops[4:] {
			gap, n, fill := int64(ops[0])*61, min((int64(ops[1])<<8|int64(ops[2]))%(16<<10), size), ops[3]
			at := min(pos+gap, size)
			n = min(n, size-at)
			p := make([]byte, n)
			for i := range p {
				p[i] = fill + byte(i*int(fill&1))
			}
			if gap == 0 {
				_, err = w.Write(p)
			} else {
				_, err = w.WriteAt(p, at)
			}
			if err != nil {
				t.Fatalf("write %d at %d: %v", n, at, err)
			}
			copy(want[at:], p)
			pos = at + n
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := NewStreamReader(bytes.NewReader(img.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		for {
			g, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("StreamReader: %v", err)
			}
			copy(got[g.Offset:], g.Data)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("StreamReader reads other content than was written")
		}
		d, err := OpenReaderAt(bytes.NewReader(img.Bytes()), int64(img.Len()), "fuzz.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		clear(got)
		if _, err := d.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatalf("ReadAt: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("the random-access reader reads other content than was written")
		}
	})
}

// FuzzSESparse: a seSparse extent whose const header, start of grain
// directory and first grain tables are fuzzed (over a delta vmdktest
// wrote, cut to a fuzzed length) opens or fails with an error, never a
// panic; whatever opens has lookups that cover their range, data runs that
// lie inside the file and read, and a Check that finishes.
func FuzzSESparse(f *testing.F) {
	dir := f.TempDir()
	var grains []vmdktest.Grain
	for i := range int64(40) {
		grains = append(grains, vmdktest.Grain{Index: i * 97 % 512, Kind: vmdktest.GrainKind(i % 3), Data: nil})
	}
	for i := range grains {
		if grains[i].Kind == vmdktest.Allocated {
			grains[i].Data = bytes.Repeat([]byte{byte(i)}, 100)
		}
	}
	if _, err := vmdktest.WriteSESparseDelta(dir, "d", "p.vmdk", 1, 17<<20+3*512, grains, vmdktest.SESparseOptions{FirstGrainIndex: 0x1001}); err != nil {
		f.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(dir, "d-sesparse.vmdk"))
	if err != nil {
		f.Fatal(err)
	}
	u64 := func(field int) int64 { return int64(binary.LittleEndian.Uint64(file[field*8:])) * SectorSize }
	gdAt, gtsAt := u64(16), u64(18)
	const gdBytes, gtBytes = 64, 2 * seGTSectors * SectorSize
	f.Add(file[:SectorSize], file[gdAt:gdAt+gdBytes], file[gtsAt:gtsAt+gtBytes], uint32(len(file)/SectorSize))
	reserved := bytes.Clone(file[:SectorSize])
	reserved[6*8+1] = 2 // reserved1 = 0x200
	f.Add(reserved, file[gdAt:gdAt+gdBytes], file[gtsAt:gtsAt+gtBytes], uint32(len(file)/SectorSize-3))
	f.Fuzz(func(t *testing.T, header, gd, gts []byte, sectors uint32) {
		img := bytes.Clone(file)
		copy(img, header[:min(len(header), SectorSize)])
		copy(img[gdAt:], gd[:min(len(gd), gdBytes)])
		copy(img[gtsAt:], gts[:min(len(gts), gtBytes)])
		img = img[:min(int64(len(img)), int64(sectors)*SectorSize+int64(sectors%SectorSize))]
		src := &source{name: "fuzz-sesparse.vmdk", r: bytes.NewReader(img), size: int64(len(img))}
		e, err := openSESparse(src, &directoryBudget{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("open: %v is neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		e.cacheTables = 2
		buf := make([]byte, 64<<10)
		steps := 0
		for off := int64(0); off < e.capacity && steps < 10000; steps++ {
			r, err := e.lookup(off, e.capacity-off)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("lookup at %d: %v", off, err)
				}
				break
			}
			if r.n <= 0 || r.n > e.capacity-off {
				t.Fatalf("lookup(%d) = %+v", off, r)
			}
			if r.kind == runData {
				if r.host < 0 || r.host+r.n > int64(len(img)) {
					t.Fatalf("data run %+v at %d is outside the %d-byte file", r, off, len(img))
				}
				p := buf[:min(r.n, int64(len(buf)))]
				if err := e.read(p, off, run{kind: runData, n: int64(len(p)), host: r.host}); err != nil {
					t.Fatalf("read of a data run: %v", err)
				}
			}
			off += r.n
		}
		var rep CheckReport
		if err := e.check(context.Background(), &rep); err != nil {
			t.Fatalf("check: %v", err)
		}
	})
}
