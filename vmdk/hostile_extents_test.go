package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hostile descriptors and extents: lines that disagree with the sparse
// headers they name, thousands of lines or files, and files that are not
// files (FIFOs, character devices). Every case ends in its error class,
// promptly and in bounded memory.

// descriptorFile writes a descriptor with the given extent lines.
func descriptorFile(t testing.TB, path string, lines []string, extra ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"custom\"\n")
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	writeFile(t, path, []byte(b.String()))
}

// splitSparse makes a twoGbMaxExtentSparse disk of 4 MiB with data in its
// last MiB and returns the descriptor path; its extent is d-s001.vmdk
// (8192 sectors).
func splitSparse(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "d.vmdk")
	if err := Create(path, CreateOptions{ImageOptions: ImageOptions{Size: 4 << 20}, Subformat: TwoGbMaxExtentSparse}); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, path, Options{ReadWrite: true})
	if _, err := d.WriteAt(bytes.Repeat([]byte{0xab}, 64<<10), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// relineSplit rewrites the descriptor's one line to sectors.
func relineSplit(t testing.TB, path string, sectors int64) {
	t.Helper()
	text := readFileT(t, path)
	out := bytes.Replace(text, []byte(`RW 8192 SPARSE`), fmt.Appendf(nil, "RW %d SPARSE", sectors), 1)
	if bytes.Equal(out, text) {
		t.Fatal("no extent line to rewrite")
	}
	writeFile(t, path, out)
}

// streamImage writes a 4 MiB streamOptimized image with data in its last
// MiB, its embedded descriptor's line rewritten to sectors.
func streamImage(t testing.TB, path string, sectors int64) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewStreamWriter(&buf, StreamOptions{ImageOptions: ImageOptions{Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{0xcd}, 64<<10), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	if sectors != 8192 {
		rewriteEmbedded(t, img, "RW 8192 SPARSE", fmt.Sprintf("RW %d SPARSE", sectors))
	}
	writeFile(t, path, img)
}

// rewriteEmbedded replaces old with new in img's embedded descriptor, in
// place: the descriptor's sectors keep their size.
func rewriteEmbedded(t testing.TB, img []byte, old, new string) {
	t.Helper()
	h, err := parseSparseHeader(img)
	if err != nil {
		t.Fatal(err)
	}
	at, n := int(h.DescriptorOffset*SectorSize), int(h.DescriptorSize*SectorSize)
	text := bytes.TrimRight(img[at:at+n], "\x00")
	out := bytes.Replace(text, []byte(old), []byte(new), 1)
	if bytes.Equal(out, text) || len(out) > n {
		t.Fatalf("embedded descriptor: cannot replace %q", old)
	}
	copy(img[at:at+n], append(out, make([]byte, n-len(out))...))
}

// bigDirectoryExtent writes a bare sparse extent of 2 TiB capacity whose
// grain directory (65536 entries, 256 KiB) names no table: a copy of its
// directory per extent line would cost 256 KiB a line.
func bigDirectoryExtent(t testing.TB, path string) {
	t.Helper()
	h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: 1 << 32, GrainSize: 128, NumGTEsPerGT: 512, GDOffset: 1}
	h.OverHead = 1 + h.gdEntries()*4/SectorSize
	img := append(h.marshal(), make([]byte, h.gdEntries()*4)...)
	writeFile(t, path, img)
}

func mkfifo(t testing.TB, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openRead opens path and reads the whole disk.
func openRead(path string, opts Options) error {
	d, err := Open(path, opts)
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = io.Copy(io.Discard, io.NewSectionReader(d, 0, d.Size()))
	return err
}

// openReaderAtRead opens path through OpenReaderAt and reads it.
func openReaderAtRead(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, _ := f.Stat()
	d, err := OpenReaderAt(f, fi.Size(), path)
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = io.Copy(io.Discard, io.NewSectionReader(d, 0, d.Size()))
	return err
}

// drainStreamFile reads path sequentially through a StreamReader.
func drainStreamFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := NewStreamReader(f)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		if _, err := s.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// checkAsError is Check with corruptions as an ErrCorrupt error.
func checkAsError(path string) error {
	r, err := Check(context.Background(), path, CheckOptions{})
	if err != nil {
		return err
	}
	if len(r.Corruptions) > 0 {
		return fmt.Errorf("%w: %s", ErrCorrupt, strings.Join(r.Corruptions, "; "))
	}
	return nil
}

func TestHostileExtents(t *testing.T) {
	quick := bound{Time: time.Second, Mem: 8 << 20}
	cases := []struct {
		name  string
		build func(t *testing.T, dir string) string // returns the image path
		run   func(path string) error
		want  error // nil: success
		b     bound
	}{
		// 1. Lines against the sparse header's capacity.
		{"split line larger than capacity: Open", func(t *testing.T, dir string) string {
			p := splitSparse(t, dir)
			relineSplit(t, p, 16384)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrCorrupt, quick},
		{"split line larger than capacity: Check", func(t *testing.T, dir string) string {
			p := splitSparse(t, dir)
			relineSplit(t, p, 8193)
			return p
		}, checkAsError, ErrCorrupt, quick},
		{"split line smaller than capacity: Check", func(t *testing.T, dir string) string {
			p := splitSparse(t, dir)
			relineSplit(t, p, 4096)
			return p
		}, checkAsError, ErrCorrupt, quick},
		{"split line equal to capacity: Check clean", func(t *testing.T, dir string) string {
			return splitSparse(t, dir)
		}, checkAsError, nil, quick},
		{"stream line larger than capacity: Open", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			streamImage(t, p, 16384)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrCorrupt, quick},
		{"stream line larger than capacity: OpenReaderAt", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			streamImage(t, p, 16384)
			return p
		}, openReaderAtRead, ErrCorrupt, quick},
		{"stream line larger than capacity: StreamReader", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			streamImage(t, p, 16384)
			return p
		}, drainStreamFile, ErrCorrupt, quick},
		{"stream line smaller than capacity: Check", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			streamImage(t, p, 4096)
			return p
		}, checkAsError, ErrCorrupt, quick},
		{"stream with two extent lines: StreamReader", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.vmdk")
			streamImage(t, p, 8192)
			img := readFileT(t, p)
			rewriteEmbedded(t, img, "RW 8192 SPARSE \"disk.vmdk\"\n", "RW 8192 SPARSE \"disk.vmdk\"\nRW 8 ZERO\n")
			writeFile(t, p, img)
			return p
		}, drainStreamFile, ErrUnsupported, quick},

		// 2. Many lines, many files.
		{"4000 lines naming one sparse file", func(t *testing.T, dir string) string {
			bigDirectoryExtent(t, filepath.Join(dir, "big.vmdk"))
			lines := make([]string, 4000)
			for i := range lines {
				lines[i] = `RW 2048 SPARSE "big.vmdk"`
			}
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, lines)
			return p
		}, func(p string) error {
			d, err := Open(p, Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			if n := len(d.Files()); n != 2 {
				return fmt.Errorf("%d files open, want 2 (the descriptor and the shared extent)", n)
			}
			_, err = d.ReadAt(make([]byte, 1<<20), d.Size()-1<<20)
			return err
		}, nil, bound{Time: 3 * time.Second, Mem: 16 << 20}},
		{"4000 lines naming one sparse file: Check", func(t *testing.T, dir string) string {
			bigDirectoryExtent(t, filepath.Join(dir, "big.vmdk"))
			lines := make([]string, 4000)
			for i := range lines {
				lines[i] = fmt.Sprintf(`RW %d SPARSE "big.vmdk"`, 2048+i) // each line its own size
			}
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, lines)
			return p
		}, checkAsError, ErrCorrupt, bound{Time: 5 * time.Second, Mem: 24 << 20}},
		{"one file by many names (hard links)", func(t *testing.T, dir string) string {
			bigDirectoryExtent(t, filepath.Join(dir, "big.vmdk"))
			lines := make([]string, 500)
			for i := range lines {
				name := fmt.Sprintf("l%d.vmdk", i)
				if err := os.Link(filepath.Join(dir, "big.vmdk"), filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				lines[i] = fmt.Sprintf(`RW 2048 SPARSE %q`, name)
			}
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, lines)
			return p
		}, func(p string) error {
			d, err := Open(p, Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			if n := len(d.Files()); n != 2 {
				return fmt.Errorf("%d files open, want 2", n)
			}
			return nil
		}, nil, bound{Time: 3 * time.Second, Mem: 8 << 20}},
		{"more files than a disk may open", func(t *testing.T, dir string) string {
			// The files need not exist: the count is refused before any
			// of them is opened.
			lines := make([]string, maxOpenFiles+1)
			for i := range lines {
				lines[i] = fmt.Sprintf(`RW 1 FLAT "f%d.raw" 0`, i)
			}
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, lines)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrUnsupported, bound{Time: time.Second, Mem: 16 << 20}},
		{"more extent lines than a descriptor may hold", func(t *testing.T, dir string) string {
			lines := make([]string, maxExtents+1)
			for i := range lines {
				lines[i] = "RW 1 ZERO"
			}
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, lines)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrCorrupt, bound{Time: time.Second, Mem: 40 << 20}},

		// 3. Files that are not files.
		{"FIFO as the image", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "fifo.vmdk")
			mkfifo(t, p)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrUnsupported, quick},
		{"FIFO as the image, opened for writing", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "fifo.vmdk")
			mkfifo(t, p)
			return p
		}, func(p string) error { return openRead(p, Options{ReadWrite: true}) }, ErrUnsupported, quick},
		{"FIFO as an extent", func(t *testing.T, dir string) string {
			mkfifo(t, filepath.Join(dir, "fifo.raw"))
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, []string{`RW 2048 FLAT "fifo.raw" 0`})
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrUnsupported, quick},
		{"FIFO as a sparse extent: Check", func(t *testing.T, dir string) string {
			mkfifo(t, filepath.Join(dir, "fifo.vmdk"))
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, []string{`RW 2048 SPARSE "fifo.vmdk"`})
			return p
		}, func(p string) error { _, err := Check(context.Background(), p, CheckOptions{}); return err }, ErrUnsupported, quick},
		{"FIFO as the parent", func(t *testing.T, dir string) string {
			mkfifo(t, filepath.Join(dir, "base.vmdk"))
			writeFile(t, filepath.Join(dir, "zero.raw"), make([]byte, 2048*SectorSize))
			p := filepath.Join(dir, "child.vmdk")
			descriptorFile(t, p, []string{`RW 2048 FLAT "zero.raw" 0`}, `parentFileNameHint="base.vmdk"`)
			return p
		}, func(p string) error { return openRead(p, Options{}) }, ErrUnsupported, quick},
		{"character device as a flat extent", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "d.vmdk")
			descriptorFile(t, p, []string{`RW 2048 FLAT "/dev/zero" 0`})
			return p
		}, func(p string) error { return openRead(p, Options{AllowUnsafePaths: true}) }, ErrUnsupported, quick},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.build(t, t.TempDir())
			err := withinBound(t, c.b, func() error { return c.run(path) })
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("want success, got %v", err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("want %v, got %v", c.want, err)
			}
			if err != nil {
				t.Logf("%v", err)
			}
		})
	}
}

// A line smaller than the header's capacity is read as the line says, the
// same by every path: Open, OpenReaderAt and the StreamReader agree on the
// size and the bytes, and Check names the grains the line hides.
func TestHostileExtentsPathsAgree(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.vmdk")
	streamImage(t, p, 4096) // 2 MiB of a 4 MiB extent; data at 3 MiB
	want := make([]byte, 2<<20)

	d := mustOpen(t, p, Options{})
	sameBytes(t, "Open", readAll(t, d), want)
	d.Close()

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	ra, err := OpenReaderAt(f, fi.Size(), p)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "OpenReaderAt", readAll(t, ra), want)
	ra.Close()

	f.Seek(0, io.SeekStart)
	sameBytes(t, "StreamReader", readStream(t, f, len(want)), want)

	r, err := Check(context.Background(), p, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Corruptions) != 1 || !strings.Contains(r.Corruptions[0], "grains allocated up to sector 6272") {
		t.Fatalf("check: %q, want the hidden grain at 3 MiB named", r.Corruptions)
	}
}

// An embedded descriptor whose first line names another sparse file: the
// descriptor lives in the image's own file, so a write that renews the CID
// rewrites it there and never in the other file.
func TestHostileExtentsEmbeddedDescriptorHome(t *testing.T) {
	dir := t.TempDir()
	splitSparse(t, dir) // d.vmdk and its extent d-s001.vmdk (4 MiB)
	a := filepath.Join(dir, "a.vmdk")
	if err := Create(a, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	img := readFileT(t, a)
	rewriteEmbedded(t, img, `RW 2048 SPARSE "a.vmdk"`, `RW 8192 SPARSE "d-s001.vmdk"`+"\n"+`RW 2048 SPARSE "a.vmdk"`)
	writeFile(t, a, img)
	other := readFileT(t, filepath.Join(dir, "d-s001.vmdk"))

	err := withinBound(t, bound{Time: time.Second, Mem: 8 << 20}, func() error {
		d, err := Open(a, Options{ReadWrite: true})
		if err != nil {
			return err
		}
		if _, err := d.WriteAt(bytes.Repeat([]byte{0xee}, 64<<10), 4<<20); err != nil { // in a.vmdk's part
			d.Close()
			return err
		}
		return d.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "the other extent file", readFileT(t, filepath.Join(dir, "d-s001.vmdk")), other)
	d := mustOpen(t, a, Options{})
	defer d.Close()
	got := make([]byte, 64<<10)
	if _, err := d.ReadAt(got, 4<<20); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "the write", got, bytes.Repeat([]byte{0xee}, 64<<10))
}

// distinctTableExtent writes a bare sparse extent of tables grain tables
// (default grains), each at its own sector but overlapping the next (a
// table is 4 sectors), so the file stays small while every table a read
// touches is read and cached on its own; the tables are written zeros
// (all grains unallocated), not holes.
func distinctTableExtent(t testing.TB, path string, tables uint64) {
	t.Helper()
	gdSectors := (tables*4 + SectorSize - 1) / SectorSize
	h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: tables * 512 * 128, GrainSize: 128, NumGTEsPerGT: 512, GDOffset: 1}
	first := 1 + gdSectors
	h.OverHead = first + tables + 4
	gd := make([]uint32, tables)
	for i := range gd {
		gd[i] = uint32(first) + uint32(i)
	}
	img := appendEntries(h.marshal(), gd)
	img = append(img, make([]byte, int(h.OverHead)*SectorSize-len(img))...)
	writeFile(t, path, img)
}

// Many distinct sparse files, each with many tables, share one budget
// of cached grain tables, and one of grain directories.
func TestHostileExtentsManyFiles(t *testing.T) {
	t.Run("grain tables of 64 extents", func(t *testing.T) {
		dir := t.TempDir()
		const files, tables = 64, 1024 // 128 MiB of tables if all were kept
		lines := make([]string, files)
		for i := range lines {
			name := fmt.Sprintf("f%d.vmdk", i)
			distinctTableExtent(t, filepath.Join(dir, name), tables)
			lines[i] = fmt.Sprintf(`RW %d SPARSE %q`, tables*512*128, name)
		}
		p := filepath.Join(dir, "d.vmdk")
		descriptorFile(t, p, lines)
		err := withinBound(t, bound{Time: 10 * time.Second, Mem: 64 << 20}, func() error {
			d, err := Open(p, Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			buf := make([]byte, SectorSize)
			for off := int64(0); off < d.Size(); off += 32 << 20 { // one read per table
				if _, err := d.ReadAt(buf, off); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("grain directories of 20 extents", func(t *testing.T) {
		dir := t.TempDir()
		const files, entries = 20, 4 << 20 // 16 MiB of directory each
		lines := make([]string, files)
		for i := range lines {
			name := fmt.Sprintf("f%d.vmdk", i)
			h := SparseHeader{Version: 1, Flags: flagNewlineCheck, Capacity: entries * 512 * 128, GrainSize: 128, NumGTEsPerGT: 512, GDOffset: 1}
			h.OverHead = 1 + entries*4/SectorSize
			writeFile(t, filepath.Join(dir, name), h.marshal())
			if err := os.Truncate(filepath.Join(dir, name), int64(h.OverHead)*SectorSize); err != nil {
				t.Fatal(err)
			}
			lines[i] = fmt.Sprintf(`RW 2048 SPARSE %q`, name)
		}
		p := filepath.Join(dir, "d.vmdk")
		descriptorFile(t, p, lines)
		err := withinBound(t, bound{Time: 5 * time.Second, Mem: 160 << 20}, func() error { return openRead(p, Options{}) })
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("want %v, got %v", ErrUnsupported, err)
		}
		t.Log(err)
	})
}

// A disk that needs more open files than the process may have fails with
// ErrUnsupported (the same on every attempt), not a bare EMFILE.
func TestHostileExtentsFileLimit(t *testing.T) {
	dir := t.TempDir()
	lines := make([]string, 100)
	for i := range lines {
		name := fmt.Sprintf("f%d.raw", i)
		writeFile(t, filepath.Join(dir, name), make([]byte, SectorSize))
		lines[i] = fmt.Sprintf(`RW 1 FLAT %q 0`, name)
	}
	p := filepath.Join(dir, "d.vmdk")
	descriptorFile(t, p, lines)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = 64 // the test binary holds a few; 100 extents need more
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	err := withinBound(t, bound{Time: time.Second, Mem: 4 << 20}, func() error { return openRead(p, Options{}) })
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "too many open files") {
		t.Fatalf("want ErrUnsupported naming the limit, got %v", err)
	}
	t.Log(err)
}
