package vmdk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// OpenFS is Open through an fs.FS: the same images read the same, whether
// from os.DirFS or an in-memory fstest.MapFS, and the path rules hold
// without a host file system to lean on.

// fsDescriptor is a descriptor's text with the given header lines
// (parentCID, parentFileNameHint, createType...) and extent lines.
func fsDescriptor(cid, parentCID uint32, createType, hint string, lines ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=1\nCID=%08x\nparentCID=%08x\ncreateType=%q\n", cid, parentCID, createType)
	if hint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=%q\n", hint)
	}
	b.WriteString("\n# Extent description\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return []byte(b.String())
}

// mapFSOf copies every file under dir into a MapFS.
func mapFSOf(t testing.TB, dir string) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		m[filepath.ToSlash(rel)] = &fstest.MapFile{Data: readFileT(t, p)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustOpenFS(t testing.TB, fsys fs.FS, name string, opts Options) *Disk {
	t.Helper()
	d, err := OpenFS(fsys, name, opts)
	if err != nil {
		t.Fatalf("OpenFS(%s): %v", name, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// fsImages build, in dir, images of the kinds an import meets; each
// returns the name to open (relative to dir) and the Root it needs.
var fsImages = []struct {
	name  string
	build func(t *testing.T, dir string) (name, root string)
}{
	{"monolithicSparse", func(t *testing.T, dir string) (string, string) {
		sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "d.vmdk", "4M")
		qemuIO(t, dir, "d.vmdk", "write -P 0xab 0 64k", "write -P 0x11 100k 3k", "write -P 0x22 3m 1m")
		return "d.vmdk", ""
	}},
	{"twoGbMaxExtentSparse", func(t *testing.T, dir string) (string, string) {
		// Three sparse extents of 1 MiB: the shape of a split disk at a
		// size a test can read whole.
		var lines []string
		for i := 1; i <= 3; i++ {
			f := fmt.Sprintf("d-s%03d.vmdk", i)
			sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", f, "1M")
			qemuIO(t, dir, f, fmt.Sprintf("write -P 0x%02x %dk 100k", 0x40+i, 300*i))
			lines = append(lines, fmt.Sprintf("RW 2048 SPARSE %q", f))
		}
		writeFile(t, filepath.Join(dir, "d.vmdk"), fsDescriptor(0x1234, NoParentCID, "twoGbMaxExtentSparse", "", lines...))
		return "d.vmdk", ""
	}},
	{"twoGbMaxExtentFlat", func(t *testing.T, dir string) (string, string) {
		var lines []string
		for i := 1; i <= 3; i++ {
			f := fmt.Sprintf("d-f%03d.vmdk", i)
			writeFile(t, filepath.Join(dir, f), mixedContent(int64(i), 1<<20))
			lines = append(lines, fmt.Sprintf("RW 2048 FLAT %q 0", f))
		}
		writeFile(t, filepath.Join(dir, "d.vmdk"), fsDescriptor(0x1234, NoParentCID, "twoGbMaxExtentFlat", "", lines...))
		return "d.vmdk", ""
	}},
	{"vmfs with a -flat extent", func(t *testing.T, dir string) (string, string) {
		writeFile(t, filepath.Join(dir, "vm-flat.vmdk"), mixedContent(7, 3<<20))
		writeFile(t, filepath.Join(dir, "vm.vmdk"), fsDescriptor(0xfffffffe, NoParentCID, "vmfs", "", `RW 6144 VMFS "vm-flat.vmdk"`))
		return "vm.vmdk", ""
	}},
	{"chain of 3 across directories", func(t *testing.T, dir string) (string, string) {
		for _, sub := range []string{"base", "vm"} {
			if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base/b.vmdk", "4M")
		qemuIO(t, dir, "base/b.vmdk", "write -P 0x01 0 4M")
		sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "../base/b.vmdk", "-F", "vmdk", "vm/mid.vmdk")
		qemuIO(t, dir, "vm/mid.vmdk", "write -P 0x02 1m 1m")
		sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "vm/top.vmdk")
		qemuIO(t, dir, "vm/top.vmdk", "write -P 0x03 1536k 1m", "write -P 0x33 3m 100")
		return "vm/top.vmdk", "."
	}},
}

// TestOpenFSReadsAsOpen: every image reads through os.DirFS and a MapFS
// byte for byte as Open and qemu-img read it, with the same files.
func TestOpenFSReadsAsOpen(t *testing.T) {
	for _, img := range fsImages {
		t.Run(img.name, func(t *testing.T) {
			dir := t.TempDir()
			name, root := img.build(t, dir)
			want := qemuRaw(t, dir, name)
			hostRoot := ""
			if root != "" {
				hostRoot = filepath.Join(dir, root)
			}
			local := mustOpen(t, filepath.Join(dir, name), Options{Root: hostRoot})
			sameBytes(t, "Open", readAll(t, local), want)
			var wantFiles []string
			for _, f := range local.Files() {
				rel, err := filepath.Rel(dir, f)
				if err != nil {
					t.Fatal(err)
				}
				wantFiles = append(wantFiles, filepath.ToSlash(rel))
			}
			for fsName, fsys := range map[string]fs.FS{"DirFS": os.DirFS(dir), "MapFS": mapFSOf(t, dir)} {
				d := mustOpenFS(t, fsys, name, Options{Root: root})
				sameBytes(t, fsName, readAll(t, d), want)
				if got := d.Files(); !slices.Equal(got, wantFiles) {
					t.Errorf("%s: Files() = %q, want %q", fsName, got, wantFiles)
				}
				if d.CID() != local.CID() || len(d.Extents()) != len(local.Extents()) {
					t.Errorf("%s: CID %08x and %d extents; Open: %08x and %d", fsName, d.CID(), len(d.Extents()), local.CID(), len(local.Extents()))
				}
				var size int64
				for _, f := range wantFiles[:len(wantFiles)-chainFiles(d.Parent())] {
					fi, err := fs.Stat(fsys, f)
					if err != nil {
						t.Fatal(err)
					}
					size += fi.Size()
				}
				if got := d.AllocatedBytes(); got != size {
					t.Errorf("%s: AllocatedBytes %d, want the files' sizes, %d", fsName, got, size)
				}
			}
		})
	}
}

// chainFiles counts the files of a disk and its chain.
func chainFiles(d *Disk) int {
	if d == nil {
		return 0
	}
	return len(d.Files())
}

// TestOpenFSRootNeeded: the chain whose parent is "../base/b.vmdk" opens
// with Root and is refused without it.
func TestOpenFSRootNeeded(t *testing.T) {
	dir := t.TempDir()
	name, _ := fsImages[len(fsImages)-1].build(t, dir)
	_, err := OpenFS(os.DirFS(dir), name, Options{})
	if !errors.Is(err, ErrInsecurePath) {
		t.Fatalf("without Root: %v, want ErrInsecurePath", err)
	}
	_, err = OpenFS(os.DirFS(dir), name, Options{Root: "vm"})
	if !errors.Is(err, ErrInsecurePath) {
		t.Fatalf("Root vm: %v, want ErrInsecurePath", err)
	}
	d := mustOpenFS(t, os.DirFS(dir), name, Options{Root: "./base/.."})
	if d.Parent() == nil || d.Parent().Parent() == nil || d.Parent().Parent().Path() != "base/b.vmdk" {
		t.Fatalf("chain %q, want base/b.vmdk at its end", d.Files())
	}
}

// TestOpenFSConfinement: names leaving the descriptor's directory (or the
// file system) are refused, though the files they name exist in fsys.
func TestOpenFSConfinement(t *testing.T) {
	data := &fstest.MapFile{Data: make([]byte, 1<<20)}
	fsys := fstest.MapFS{
		"x": data, "etc/passwd": data, "vm/x": data, "vm/a/x": data,
		"p.vmdk":     {Data: fsDescriptor(1, NoParentCID, "monolithicFlat", "", `RW 2048 FLAT "x" 0`)},
		"vm/d-flat":  data,
		"vm/sub/d-f": data,
	}
	extent := func(name, file string) {
		fsys[name] = &fstest.MapFile{Data: fsDescriptor(2, NoParentCID, "monolithicFlat", "", fmt.Sprintf(`RW 2048 FLAT %q 0`, file))}
	}
	for _, c := range []struct {
		file string
		opts Options
		ok   bool
	}{
		{"../x", Options{}, false},
		{"/etc/passwd", Options{}, false},
		{"/etc/passwd", Options{AllowUnsafePaths: true}, false}, // no escape from fsys
		{"a/../../x", Options{}, false},
		{`..\x`, Options{}, false},
		{`a\..\..\x`, Options{AllowUnsafePaths: true}, false},
		{"C:x", Options{}, false},
		{"../../x", Options{AllowUnsafePaths: true}, false}, // above fsys's root
		{"../x", Options{AllowUnsafePaths: true}, true},
		{"../x", Options{Root: "."}, true},
		{"../x", Options{Root: "vm"}, false},
		{"d-flat", Options{}, true},
		{"sub/d-f", Options{}, true},
		{"a/../d-flat", Options{}, true},
		{"./sub/../sub/d-f", Options{Root: "vm"}, true},
	} {
		extent("vm/d.vmdk", c.file)
		d, err := OpenFS(fsys, "vm/d.vmdk", c.opts)
		if c.ok {
			if err != nil {
				t.Errorf("%q with %+v: %v", c.file, c.opts, err)
				continue
			}
			d.Close()
		} else if !errors.Is(err, ErrInsecurePath) {
			t.Errorf("%q with %+v: %v, want ErrInsecurePath", c.file, c.opts, err)
		}
	}
	// A parent hint escaping is refused the same way.
	fsys["vm/child.vmdk"] = &fstest.MapFile{Data: fsDescriptor(3, 1, "monolithicFlat", "../p.vmdk", `RW 2048 FLAT "d-flat" 0`)}
	if _, err := OpenFS(fsys, "vm/child.vmdk", Options{}); !errors.Is(err, ErrInsecurePath) {
		t.Errorf("parent ../p.vmdk: %v, want ErrInsecurePath", err)
	}
	d := mustOpenFS(t, fsys, "vm/child.vmdk", Options{Root: "."})
	if d.Parent() == nil || d.Parent().Path() != "p.vmdk" {
		t.Errorf("with Root \".\": parent %v, want p.vmdk", d.Parent())
	}
	for _, root := range []string{"..", "/vm", "../vm"} {
		if _, err := OpenFS(fsys, "vm/child.vmdk", Options{Root: root}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Root %q: %v, want ErrInvalidOptions", root, err)
		}
	}
}

// TestOpenFSChainErrors: a cycle by names, a missing parent.
func TestOpenFSChainErrors(t *testing.T) {
	fsys := fstest.MapFS{
		"a.vmdk":     {Data: fsDescriptor(1, 2, "monolithicFlat", "b.vmdk", `RW 2048 ZERO`)},
		"b.vmdk":     {Data: fsDescriptor(2, 1, "monolithicFlat", "sub/../a.vmdk", `RW 2048 ZERO`)},
		"orph.vmdk":  {Data: fsDescriptor(3, 9, "monolithicFlat", "gone.vmdk", `RW 2048 ZERO`)},
		"cycle.vmdk": {Data: fsDescriptor(4, 4, "monolithicFlat", "cycle.vmdk", `RW 2048 ZERO`)},
	}
	for _, name := range []string{"a.vmdk", "cycle.vmdk"} {
		_, err := OpenFS(fsys, name, Options{})
		if !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "loops back") {
			t.Errorf("%s: %v, want ErrChainBroken: the chain loops", name, err)
		}
	}
	_, err := OpenFS(fsys, "orph.vmdk", Options{})
	if !errors.Is(err, ErrChainBroken) {
		t.Errorf("missing parent: %v, want ErrChainBroken", err)
	}
}

// countingFS counts the files it has open, and fails or disguises the
// files named in fail and bare.
type countingFS struct {
	fs.FS
	mu    sync.Mutex
	open  map[string]int
	opens int
	fail  map[string]error
	bare  map[string]bool // returned without ReadAt
}

type countedFile struct {
	fs.File
	c    *countingFS
	name string
}

func (f *countedFile) ReadAt(p []byte, off int64) (int, error) {
	return f.File.(interface {
		ReadAt([]byte, int64) (int, error)
	}).ReadAt(p, off)
}

func (f *countedFile) Close() error {
	f.c.mu.Lock()
	f.c.open[f.name]--
	f.c.mu.Unlock()
	return f.File.Close()
}

type bareFile struct{ fs.File }

func (c *countingFS) Open(name string) (fs.File, error) {
	if err := c.fail[name]; err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f, err := c.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if c.bare[name] {
		return bareFile{f}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open[name]++
	c.opens++
	return &countedFile{File: f, c: c, name: name}, nil
}

func (c *countingFS) stillOpen() []string {
	var out []string
	for n, k := range c.open {
		if k != 0 {
			out = append(out, fmt.Sprintf("%s (%d)", n, k))
		}
	}
	return out
}

// errUnauthorized stands for the error an HTTP file system returns on 401.
type errUnauthorized struct{ status int }

func (e *errUnauthorized) Error() string { return fmt.Sprintf("HTTP %d", e.status) }

// TestOpenFSFiles: a file named by two lines is opened once, Close closes
// every file (and a failed open those it opened), a file the parent
// shares is listed once (as Open does), fsys's errors reach
// the caller, and a file without ReadAt is refused.
func TestOpenFSFiles(t *testing.T) {
	newFS := func() *countingFS {
		return &countingFS{FS: fstest.MapFS{
			"base.vmdk": {Data: fsDescriptor(7, NoParentCID, "twoGbMaxExtentFlat", "", `RW 2048 FLAT "flat" 0`, `RW 2048 FLAT "flat" 2048`)},
			"top.vmdk":  {Data: fsDescriptor(8, 7, "twoGbMaxExtentFlat", "base.vmdk", `RW 2048 FLAT "top-flat" 0`, `RW 2048 FLAT "flat" 2048`)},
			"flat":      {Data: mixedContent(3, 2<<20)},
			"top-flat":  {Data: mixedContent(4, 1<<20)},
		}, open: map[string]int{}, fail: map[string]error{}, bare: map[string]bool{}}
	}
	c := newFS()
	d, err := OpenFS(c, "top.vmdk", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.opens != 4 {
		t.Errorf("%d files opened for 4 names: %v", c.opens, c.open)
	}
	if want := []string{"top.vmdk", "top-flat", "flat", "base.vmdk"}; !slices.Equal(d.Files(), want) {
		t.Errorf("Files() = %q, want %q", d.Files(), want)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if open := c.stillOpen(); len(open) != 0 {
		t.Errorf("after Close, still open: %v", open)
	}

	unauthorized := &errUnauthorized{401}
	c = newFS()
	c.fail["base.vmdk"] = unauthorized
	_, err = OpenFS(c, "top.vmdk", Options{})
	var got *errUnauthorized
	if !errors.As(err, &got) || got.status != 401 || errors.Is(err, ErrChainBroken) {
		t.Errorf("parent's 401: %v, want the file system's error", err)
	}
	if open := c.stillOpen(); len(open) != 0 {
		t.Errorf("after a failed open, still open: %v", open)
	}
	c = newFS()
	c.fail["top-flat"] = fs.ErrPermission
	if _, err = OpenFS(c, "top.vmdk", Options{}); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("extent's permission error: %v, want fs.ErrPermission", err)
	}

	c = newFS()
	c.bare["flat"] = true
	if _, err = OpenFS(c, "top.vmdk", Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "ReadAt") {
		t.Errorf("a file without ReadAt: %v, want ErrUnsupported", err)
	}
	if open := c.stillOpen(); len(open) != 0 {
		t.Errorf("after a refused file, still open: %v", open)
	}
}

// TestOpenFSRefusals: ReadWrite, names that are not fs.FS names, a
// directory.
func TestOpenFSRefusals(t *testing.T) {
	fsys := fstest.MapFS{
		"d.vmdk":   {Data: fsDescriptor(1, NoParentCID, "monolithicFlat", "", `RW 2048 FLAT "flat" 0`)},
		"dir.vmdk": {Data: fsDescriptor(1, NoParentCID, "monolithicFlat", "", `RW 2048 FLAT "sub" 0`)},
		"flat":     {Data: make([]byte, 1<<20)},
		"sub/x":    {Data: []byte("x")},
	}
	if _, err := OpenFS(fsys, "d.vmdk", Options{ReadWrite: true}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("ReadWrite: %v, want ErrInvalidOptions", err)
	}
	for _, name := range []string{"/d.vmdk", "./d.vmdk", "x/../d.vmdk"} {
		if _, err := OpenFS(fsys, name, Options{}); !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalidOptions and fs.ErrInvalid", name, err)
		}
	}
	if _, err := OpenFS(fsys, "dir.vmdk", Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "a directory") {
		t.Errorf("a directory as extent: %v, want ErrUnsupported", err)
	}
	mustOpenFS(t, fsys, "d.vmdk", Options{})
}
