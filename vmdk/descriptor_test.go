package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

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

func TestFormatKeepsValues(t *testing.T) {
	d := &Descriptor{Version: 1, CID: 1, ParentCID: NoParentCID, CreateType: "monolithicFlat",
		ParentFileNameHint: `C:\vms\base.vmdk`, DDB: []KeyValue{{"ddb.comment", `say "hi"` + "\nRW 1 FLAT \"x\" 0"}}}
	got, err := ParseDescriptor(d.Format())
	if err != nil {
		t.Fatal(err)
	}
	// The value keeps its quotes (the parser keeps inner quotes verbatim)
	// but not its line break: it cannot start an extent line.
	if got.ParentFileNameHint != `C:\vms\base.vmdk` || len(got.Extents) != 0 || got.DDBValue("ddb.comment") != `say "hi"RW 1 FLAT "x" 0` {
		t.Fatalf("round trip: %+v", got)
	}
}
