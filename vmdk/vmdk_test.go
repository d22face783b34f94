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

// buildCOWD writes raw as a VMDK3/vmfsSparse (COWD) extent, a fixture
// independent of the package's code: header, GD at sector 4, 4096-entry GTs,
// then the non-zero grains.
func buildCOWD(t testing.TB, raw []byte, grainSectors uint32) []byte {
	t.Helper()
	sectors := uint32((len(raw) + 511) / 512)
	grain := int(grainSectors) * 512
	gdEntries := (sectors + grainSectors*4096 - 1) / (grainSectors * 4096)
	gdSectors := (gdEntries*4 + 511) / 512
	gtStart := 4 + gdSectors
	img := make([]byte, (gtStart+gdEntries*32)*512)
	copy(img, "COWD")
	le := binary.LittleEndian
	le.PutUint32(img[4:], 1)
	le.PutUint32(img[8:], 3)
	le.PutUint32(img[12:], sectors)
	le.PutUint32(img[16:], grainSectors)
	le.PutUint32(img[20:], 4)
	le.PutUint32(img[24:], gdEntries)
	for i := uint32(0); i < gdEntries; i++ {
		le.PutUint32(img[4*512+i*4:], gtStart+i*32)
	}
	for g := 0; g*grain < len(raw); g++ {
		data := raw[g*grain : min((g+1)*grain, len(raw))]
		if bytes.Equal(data, make([]byte, len(data))) {
			continue
		}
		at := uint32(len(img) / 512)
		gt := int(gtStart)*512 + (g/4096)*4096*4 + (g%4096)*4
		le.PutUint32(img[gt:], at)
		img = append(img, data...)
		img = append(img, make([]byte, grain-len(data))...)
	}
	le.PutUint32(img[28:], uint32(len(img)/512))
	return img
}

func TestCOWD(t *testing.T) {
	raw := mixedContent(11, 40<<20+7*512) // two grain tables of 8 KiB grains
	img := buildCOWD(t, raw, 16)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c-delta.vmdk"), img)
	d := mustOpen(t, filepath.Join(dir, "c-delta.vmdk"), Options{})
	sameBytes(t, "bare COWD", readAll(t, d), raw)
	// The same extent behind a vmfsSparse descriptor.
	writeFile(t, filepath.Join(dir, "c.vmdk"), []byte(fmt.Sprintf(
		"version=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW %d VMFSSPARSE \"c-delta.vmdk\"\n", len(raw)/512)))
	d = mustOpen(t, filepath.Join(dir, "c.vmdk"), Options{})
	sameBytes(t, "vmfsSparse descriptor", readAll(t, d), raw)
}

// TestDescriptorExtentLines: every extent line counts at its place
// (QEMU drops RDONLY/NOACCESS/ZERO lines and misplaces what follows);
// lowercase lines, a custom createType and names with spaces read.
func TestDescriptorExtentLines(t *testing.T) {
	dir := t.TempDir()
	a := mixedContent(21, 100*512)
	writeFile(t, filepath.Join(dir, "a b.raw"), a)
	ro := bytes.Repeat([]byte{0xee}, 40*512)
	writeFile(t, filepath.Join(dir, "ro.raw"), ro)
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "s.vmdk", "8K")
	qemuIO(t, dir, "s.vmdk", "write -P 0x5e 0 8k")
	writeFile(t, filepath.Join(dir, "d.vmdk"), []byte("# Disk DescriptorFile\r\n"+
		"# CID=99999999 in a comment must not count\r\n"+
		"Version=1\r\nparentCID=ffffffff\r\ncid=ABCDEF01\r\nCREATETYPE=\"custom\"\r\n\r\n"+
		"RW 100 FLAT \"a b.raw\" 0\r\n"+
		"RDONLY 20 ZERO\r\n"+
		"NOACCESS 8 FLAT \"missing.raw\" 4\r\n"+
		"rdonly 30 flat \"ro.raw\" 10\r\n"+
		"rw 16 sparse \"s.vmdk\"\r\n"+
		"ddb.adapterType = \"ide\"\r\n"))
	d := mustOpen(t, filepath.Join(dir, "d.vmdk"), Options{})
	if d.CID() != 0xabcdef01 || d.ParentCID() != NoParentCID || d.CreateType() != "custom" {
		t.Fatalf("CID %08x parentCID %08x createType %q", d.CID(), d.ParentCID(), d.CreateType())
	}
	if got := d.Descriptor().DDBValue("ddb.adaptertype"); got != "ide" {
		t.Errorf("adapterType %q", got)
	}
	if d.Size() != (100+20+8+30+16)*512 {
		t.Fatalf("size %d sectors", d.Size()/512)
	}
	read := func(off, n int64) ([]byte, error) {
		b := make([]byte, n)
		_, err := d.ReadAt(b, off)
		return b, err
	}
	for _, c := range []struct {
		off, n int64
		want   []byte
	}{
		{0, 100 * 512, a},
		{100 * 512, 20 * 512, make([]byte, 20*512)},
		{128 * 512, 30 * 512, ro[10*512:]},
		{158 * 512, 16 * 512, bytes.Repeat([]byte{0x5e}, 8<<10)},
	} {
		got, err := read(c.off, c.n)
		if err != nil {
			t.Fatalf("read at sector %d: %v", c.off/512, err)
		}
		sameBytes(t, fmt.Sprintf("sector %d", c.off/512), got, c.want)
	}
	if _, err := read(120*512, 512); !errors.Is(err, ErrNoAccess) {
		t.Fatalf("read of NOACCESS extent: %v", err)
	}
	m, err := d.BlockStatus(100*512, 58*512)
	if err != nil || !m.Zero || m.Length != 20*512 {
		t.Fatalf("BlockStatus of ZERO extent: %+v %v", m, err)
	}
}

// TestLowercaseCreateType: QEMU rejects createType="monolithicflat"; the
// grammar is case-insensitive, so it reads.
func TestLowercaseCreateType(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "d-flat.vmdk"), bytes.Repeat([]byte{3}, 4096))
	writeFile(t, filepath.Join(dir, "d.vmdk"), []byte("version=1\ncid=00000001\nparentcid=ffffffff\ncreatetype=\"monolithicflat\"\nrw 8 flat \"d-flat.vmdk\" 0\n"))
	d := mustOpen(t, filepath.Join(dir, "d.vmdk"), Options{})
	sameBytes(t, "lowercase descriptor", readAll(t, d), bytes.Repeat([]byte{3}, 4096))
}

func TestParseDescriptorErrors(t *testing.T) {
	for _, c := range []struct {
		text string
		want error
	}{
		{"CID=fffffffe\n", ErrCorrupt},                                      // no version
		{"version=1\n", ErrCorrupt},                                         // no CID
		{"version=9\nCID=1\n", ErrUnsupported},                              // unknown version
		{"version=1\nCID=xyz\n", ErrCorrupt},                                // bad CID
		{"version=1\nCID=1\nRW 10 WEIRD \"f\"\n", ErrUnsupported},           // extent type
		{"version=1\nCID=1\nRW 10 FLAT \"f\n", ErrCorrupt},                  // unterminated name
		{"version=1\nCID=1\nRW -5 FLAT \"f\" 0\n", ErrCorrupt},              // negative size
		{"version=1\nCID=1\nRW 10 SPARSE \"f\" 7\n", ErrCorrupt},            // offset on sparse
		{"version=1\nCID=1\njunk line\n", ErrCorrupt},                       // not key=value
		{"version=1\nCID=1\nRW 99999999999999999 FLAT \"f\"\n", ErrCorrupt}, // absurd size
	} {
		if _, err := ParseDescriptor([]byte(c.text)); !errors.Is(err, c.want) {
			t.Errorf("%q: %v, want %v", c.text, err, c.want)
		}
	}
	// Whole-key matching: parentCID does not set CID and vice versa.
	d, err := ParseDescriptor([]byte("version=1\nparentCID=00000007\nCID=00000009\nmyCID=5\n"))
	if err != nil || d.CID != 9 || d.ParentCID != 7 {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestProbe(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Kind
	}{
		{"KDMV\x01", KindSparse},
		{"COWD\x01", KindCOWD},
		{"# Disk DescriptorFile\n\n  \r\n# x\nversion=1\n", KindDescriptor},
		{"\r\nVERSION = 1\r\n", KindDescriptor},
	} {
		if k, err := Probe(strings.NewReader(c.in)); k != c.want || err != nil {
			t.Errorf("Probe(%q) = %v, %v", c.in, k, err)
		}
	}
	for _, in := range []string{"", "QFI\xfb", "hello\nversion=1\n", "\x00\x00\x00\x00"} {
		if _, err := Probe(strings.NewReader(in)); !errors.Is(err, ErrNotVMDK) {
			t.Errorf("Probe(%q) = %v, want ErrNotVMDK", in, err)
		}
	}
}

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
