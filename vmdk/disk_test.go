package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestPathSafety: extent and parent paths may not leave the allowed
// directory unless the caller says so.
func TestPathSafety(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"img", "base", "outside"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	writeFile(t, filepath.Join(root, "outside", "secret.raw"), bytes.Repeat([]byte{7}, 4096))
	os.Symlink(filepath.Join(root, "outside", "secret.raw"), filepath.Join(root, "img", "link.raw"))
	desc := func(name, extra string) string {
		p := filepath.Join(root, "img", name)
		writeFile(t, p, []byte("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"+extra))
		return p
	}
	for name, extent := range map[string]string{
		"escape.vmdk":   "RW 8 FLAT \"../outside/secret.raw\" 0\n",
		"absolute.vmdk": fmt.Sprintf("RW 8 FLAT %q 0\n", filepath.Join(root, "outside", "secret.raw")),
		"symlink.vmdk":  "RW 8 FLAT \"link.raw\" 0\n",
	} {
		p := desc(name, extent)
		if _, err := Open(p, Options{}); !errors.Is(err, ErrInsecurePath) {
			t.Errorf("%s: %v, want ErrInsecurePath", name, err)
		}
		d, err := Open(p, Options{AllowUnsafePaths: true})
		if err != nil {
			t.Errorf("%s with AllowUnsafePaths: %v", name, err)
			continue
		}
		d.Close()
	}
	// A chain laid out as /images/<name>/disk.vmdk opens with Root.
	sh(t, filepath.Join(root, "base"), "qemu-img", "create", "-q", "-f", "vmdk", "disk.vmdk", "1M")
	sh(t, filepath.Join(root, "img"), "qemu-img", "create", "-q", "-f", "vmdk", "-b", "../base/disk.vmdk", "-F", "vmdk", "disk.vmdk")
	child := filepath.Join(root, "img", "disk.vmdk")
	if _, err := Open(child, Options{}); !errors.Is(err, ErrInsecurePath) {
		t.Errorf("parent outside the child's directory: %v, want ErrInsecurePath", err)
	}
	d, err := Open(child, Options{Root: root})
	if err != nil {
		t.Fatalf("with Root: %v", err)
	}
	if d.Parent() == nil {
		t.Fatal("no parent")
	}
	d.Close()
	if _, err := Open(child, Options{Root: filepath.Join(root, "img")}); !errors.Is(err, ErrInsecurePath) {
		t.Errorf("Root that excludes the parent: %v", err)
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

// TestBadImages: damaged and hostile images fail fast with a clear error
// and without large allocations.
func TestBadImages(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "good.vmdk", "64M")
	qemuIO(t, dir, "good.vmdk", "write -P 1 0 1M")
	good := readFileT(t, filepath.Join(dir, "good.vmdk"))
	patch := func(off int, v uint64, size int) []byte {
		b := bytes.Clone(good)
		if size == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	patch2 := func(off1 int, v1 uint64, off2 int, v2 uint64) []byte {
		b := patch(off1, v1, 8)
		binary.LittleEndian.PutUint64(b[off2:], v2)
		return b
	}
	cases := map[string]struct {
		img  []byte
		want error
		msg  string
	}{
		"truncated-header":   {good[:300], ErrCorrupt, "past the end"},
		"truncated-tables":   {good[:20*512], ErrCorrupt, "File truncated"},
		"truncated-grain":    {good[:len(good)-4096], ErrCorrupt, "past the end"},
		"grain-size-0":       {patch(20, 0, 8), ErrCorrupt, "invalid granularity"},
		"grain-size-3":       {patch(20, 3*128, 8), ErrCorrupt, "invalid granularity"},
		"grain-size-huge":    {patch(20, 1<<40, 8), ErrCorrupt, "invalid granularity"},
		"gt-too-big":         {patch(44, 1<<20, 4), ErrCorrupt, "L2 table size too big"},
		"gd-too-big":         {patch2(12, 1<<39, 20, 16), ErrCorrupt, "L1 size too big"},
		"capacity-absurd":    {patch(12, 1<<62, 8), ErrCorrupt, "absurd"},
		"huge-gd-tiny-file":  {patch(12, 1<<38, 8), ErrCorrupt, "File truncated"},
		"descriptor-huge":    {patch(36, 1<<30, 8), ErrCorrupt, "too big"},
		"descriptor-outside": {patch(28, 1<<30, 8), ErrCorrupt, "past the end"},
		"gd-outside":         {patch(56, 1<<31, 8), ErrCorrupt, "File truncated"},
		"version-4":          {patch(4, 4, 4), ErrUnsupported, "version 4"},
		"not-vmdk":           {[]byte("QFI\xfb not a vmdk at all"), ErrNotVMDK, "not a VMDK"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".vmdk")
			writeFile(t, p, c.img)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			d, err := Open(p, Options{})
			if err == nil {
				_, err = d.ReadAt(make([]byte, 1<<20), 0)
				d.Close()
			}
			runtime.ReadMemStats(&after)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.msg)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			if el := time.Since(start); el > time.Second {
				t.Errorf("took %v", el)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
		})
	}
}

func TestChainFailures(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
	os.Rename(filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "moved.vmdk"))
	if _, err := Open(filepath.Join(dir, "top.vmdk"), Options{}); !errors.Is(err, ErrChainBroken) {
		t.Errorf("missing parent: %v, want ErrChainBroken", err)
	}
	// A cycle: a's parent is b and b's parent is a.
	for _, p := range [][2]string{{"a.vmdk", "b.vmdk"}, {"b.vmdk", "a.vmdk"}} {
		writeFile(t, filepath.Join(dir, p[0]), []byte(fmt.Sprintf("version=1\nCID=1\nparentCID=1\ncreateType=\"monolithicFlat\"\nparentFileNameHint=%q\nRW 8 ZERO\n", p[1])))
	}
	if _, err := Open(filepath.Join(dir, "a.vmdk"), Options{}); !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "loops") {
		t.Errorf("cycle: %v", err)
	}
	// Depth limit.
	if _, err := Open(filepath.Join(dir, "a.vmdk"), Options{MaxChainDepth: 1}); !errors.Is(err, ErrChainBroken) {
		t.Errorf("depth limit: %v", err)
	}
	writeFile(t, filepath.Join(dir, "m.vmdk"), []byte("version=1\nCID=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"nothere.raw\" 0\n"))
	if _, err := Open(filepath.Join(dir, "m.vmdk"), Options{}); err == nil || !strings.Contains(err.Error(), "nothere.raw") {
		t.Errorf("missing extent: %v", err)
	}
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

// TestPropertyRandomWrites drives qemu-io with random writes and zero
// writes on a two-level chain and checks random reads against an in-memory
// raw model of the child's content.
func TestPropertyRandomWrites(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewSource(seed))
			dir := t.TempDir()
			const size = 3<<20 + 1536
			model := make([]byte, size)
			ops := func(img string, zeroed bool) {
				var cmds []string
				for range 25 {
					off := int64(r.Intn(size/512)) * 512
					n := min(int64(1+r.Intn(200))*512, size-off)
					if zeroed && r.Intn(3) == 0 {
						// qemu zeroes whole grains with GTE 1, the rest by writing zeros.
						cmds = append(cmds, fmt.Sprintf("write -z %d %d", off, n))
						clear(model[off : off+n])
						continue
					}
					p := byte(1 + r.Intn(255))
					cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", p, off, n))
					for i := off; i < off+n; i++ {
						model[i] = p
					}
				}
				qemuIO(t, dir, img, cmds...)
			}
			sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", fmt.Sprint(size))
			ops("base.vmdk", false)
			sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
			ops("top.vmdk", true)
			d := mustOpen(t, filepath.Join(dir, "top.vmdk"), Options{})
			for range 300 {
				off := r.Int63n(size)
				n := 1 + r.Int63n(min(size-off, 300<<10))
				buf := make([]byte, n)
				if _, err := d.ReadAt(buf, off); err != nil {
					t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
				}
				sameBytes(t, fmt.Sprintf("ReadAt(%d, %d)", off, n), buf, model[off:off+n])
			}
			sameBytes(t, "whole disk", readAll(t, d), model)
		})
	}
}
