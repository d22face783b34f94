package vmdk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// The descriptors ESXi writes (testdata/esxi, by hand) parse, survive
// Format, and open over the extent files the tests write; those qemu-img
// reads are compared with it byte for byte, the others with the extent.

const esxiDiskBytes = 4 << 20 // every fixture's extent line is 8192 sectors

var esxiFixtures = []struct {
	file, createType string
	version          int
	thin             bool
	qemu             bool // qemu-img reads this createType
}{
	{"thick.vmdk", "vmfs", 1, false, true},
	{"thin.vmdk", "vmfs", 1, true, true},
	{"vmfsThin.vmdk", "vmfsThin", 1, false, false},
	{"vmfsPreallocated.vmdk", "vmfsPreallocated", 1, false, false},
	{"eagerzeroed.vmdk", "vmfsEagerZeroedThick", 1, false, false},
	{"v3ctk.vmdk", "vmfs", 3, true, true},
}

func esxiFixture(t testing.TB, name string) []byte {
	t.Helper()
	return readFileT(t, filepath.Join("testdata", "esxi", name))
}

// writeESXiFlat writes an extent file of esxiDiskBytes with data in a
// few places; thin leaves the rest as holes of the file, as VMFS does.
func writeESXiFlat(t testing.TB, path string, seed int64, thin bool) []byte {
	t.Helper()
	content := make([]byte, esxiDiskBytes)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(esxiDiskBytes); err != nil {
		t.Fatal(err)
	}
	pieces := [][2]int{{0, 64 << 10}, {1<<20 + 512, 200 << 10}, {esxiDiskBytes - 4096, 4096}}
	if !thin {
		pieces = [][2]int{{0, esxiDiskBytes}}
	}
	for _, p := range pieces {
		copy(content[p[0]:p[0]+p[1]], mixedContent(seed+int64(p[0]), p[1]))
		if _, err := f.WriteAt(content[p[0]:p[0]+p[1]], int64(p[0])); err != nil {
			t.Fatal(err)
		}
	}
	return content
}

// TestESXiDescriptors: each fixture parses with its createType, version,
// change-tracking path and every ddb entry, Formats back to itself, and
// reads its -flat file byte for byte through Open and OpenFS.
func TestESXiDescriptors(t *testing.T) {
	for i, fx := range esxiFixtures {
		t.Run(fx.file, func(t *testing.T) {
			text := esxiFixture(t, fx.file)
			d, err := ParseDescriptor(text)
			if err != nil {
				t.Fatal(err)
			}
			if d.CreateType != fx.createType || d.Version != fx.version || d.Encoding != "UTF-8" {
				t.Errorf("createType %q version %d encoding %q, want %q %d UTF-8", d.CreateType, d.Version, d.Encoding, fx.createType, fx.version)
			}
			if got := d.DDBValue("ddb.thinProvisioned") == "1"; got != fx.thin {
				t.Errorf("thinProvisioned %v, want %v", got, fx.thin)
			}
			if n := bytes.Count(text, []byte("\nddb.")); len(d.DDB) != n || d.DDBValue("ddb.adapterType") == "" || d.DDBValue("ddb.uuid") == "" {
				t.Errorf("%d ddb entries (%v), the file has %d", len(d.DDB), d.DDB, n)
			}
			wantCTK := fx.version == 3
			if got := reflect.DeepEqual(d.Other, []KeyValue{{"changeTrackPath", strings.TrimSuffix(fx.file, ".vmdk") + "-ctk.vmdk"}}); got != wantCTK {
				t.Errorf("other entries %v; want changeTrackPath: %v", d.Other, wantCTK)
			}
			again, err := ParseDescriptor(d.Format())
			if err != nil {
				t.Fatalf("Format's output does not parse: %v\n%s", err, d.Format())
			}
			if !reflect.DeepEqual(again, d) {
				t.Errorf("Format round trip:\n%+v\nwant\n%+v", again, d)
			}

			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, fx.file), text)
			want := writeESXiFlat(t, filepath.Join(dir, d.Extents[0].File), int64(i), fx.thin)
			if fx.qemu {
				sameBytes(t, "qemu-img", qemuRaw(t, dir, fx.file), want)
			}
			disk := mustOpen(t, filepath.Join(dir, fx.file), Options{})
			sameBytes(t, "Open", readAll(t, disk), want)
			if disk.CreateType() != fx.createType || disk.Size() != esxiDiskBytes {
				t.Errorf("opened: createType %q size %d", disk.CreateType(), disk.Size())
			}
			sameBytes(t, "OpenFS", readAll(t, mustOpenFS(t, os.DirFS(dir), fx.file, Options{})), want)
		})
	}
}

// TestESXiVMFSSparseDelta: the vmfsSparse snapshot descriptor ESXi writes
// for VMFS5 disks, over a COWD delta of thick.vmdk, reads the parent with
// the delta's grains on top, as qemu-img does.
func TestESXiVMFSSparseDelta(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "thick.vmdk"), esxiFixture(t, "thick.vmdk"))
	want := writeESXiFlat(t, filepath.Join(dir, "thick-flat.vmdk"), 11, false)
	var grains []vmdktest.Grain
	for i, idx := range []int64{0, 1, 300, 1023} {
		data := bytes.Repeat([]byte{byte(0xa0 + i)}, vmdktest.GrainSize-100*i)
		grains = append(grains, vmdktest.Grain{Index: idx, Data: data})
		grain := want[idx*vmdktest.GrainSize : (idx+1)*vmdktest.GrainSize]
		clear(grain) // a short grain's tail reads as zeros
		copy(grain, data)
	}
	// The writer makes thick-000001-delta.vmdk (and its own descriptor,
	// replaced by the fixture).
	if _, err := vmdktest.WriteVMFSSparseDelta(dir, "thick-000001", "thick.vmdk", 0x6a41c2d3, esxiDiskBytes, grains, vmdktest.VMFSSparseOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "delta.vmdk"), esxiFixture(t, "delta.vmdk"))
	sameBytes(t, "qemu-img", qemuRaw(t, dir, "delta.vmdk"), want)
	d := mustOpen(t, filepath.Join(dir, "delta.vmdk"), Options{})
	sameBytes(t, "Open", readAll(t, d), want)
	if d.ChainError() != nil || d.Parent() == nil || d.CreateType() != "vmfsSparse" || d.Descriptor().Other[0] != (KeyValue{"isNativeSnapshot", "no"}) {
		t.Errorf("chain error %v, parent %v, createType %q, other %v", d.ChainError(), d.Parent(), d.CreateType(), d.Descriptor().Other)
	}
	again, err := ParseDescriptor(d.Descriptor().Format())
	if err != nil || !reflect.DeepEqual(again, d.Descriptor()) {
		t.Errorf("Format round trip: %v\n%+v\nwant\n%+v", err, again, d.Descriptor())
	}
}

const (
	vsanPhrase = "vSAN objects are not files: export the VM (OVF/NFC export) or copy the disk to a VMFS/NFS datastore first"
	rdmPhrase  = "the data is on the LUN, not in the file"
)

// TestRefusedDescriptors: vSAN objects and raw device mappings are refused
// when the descriptor is parsed, and so by Open and OpenFS, with the way
// forward, even when the files they name exist.
func TestRefusedDescriptors(t *testing.T) {
	inline := func(version, createType, extent, hint string) []byte {
		s := "# Disk DescriptorFile\nversion=" + version + "\nCID=12345678\nparentCID=ffffffff\ncreateType=\"" + createType + "\"\n"
		if hint != "" {
			s += "parentFileNameHint=\"" + hint + "\"\n"
		}
		return []byte(s + "\n# Extent description\n" + extent + "\n")
	}
	for _, c := range []struct {
		name   string
		text   []byte
		file   string // the file the extent names, made to exist
		phrase string
	}{
		{"rdm.vmdk", esxiFixture(t, "rdm.vmdk"), "rdm-rdm.vmdk", rdmPhrase},
		{"rdmp.vmdk", esxiFixture(t, "rdmp.vmdk"), "rdmp-rdmp.vmdk", rdmPhrase},
		{"vsan.vmdk", esxiFixture(t, "vsan.vmdk"), "", vsanPhrase},
		{"vsansparse.vmdk", esxiFixture(t, "vsansparse.vmdk"), "", vsanPhrase},
		{"VMFSRDM in a vmfs descriptor", inline("1", "vmfs", `RW 2048 VMFSRDM "x-rdm.vmdk"`, ""), "x-rdm.vmdk", rdmPhrase},
		{"VMFSRDMP in lower case", inline("1", "custom", `RW 2048 vmfsrdmp "x-rdmp.vmdk"`, ""), "x-rdmp.vmdk", rdmPhrase},
		{"VMFSRAW", inline("1", "custom", `RW 2048 VMFSRAW "x-raw.vmdk" 0`, ""), "x-raw.vmdk", rdmPhrase},
		{"createType vmfsRawDeviceMap alone", inline("1", "vmfsRawDeviceMap", `RW 2048 VMFS "x-flat.vmdk"`, ""), "x-flat.vmdk", rdmPhrase},
		{"VSANSPARSE naming a plain file", inline("1", "vsanSparse", `RW 2048 VSANSPARSE "x-vsan.vmdk"`, ""), "x-vsan.vmdk", vsanPhrase},
		{"a vsan:// FLAT extent", inline("1", "monolithicFlat", `RW 2048 FLAT "VSAN://52f3a1d0-6c2b" 0`, ""), "", vsanPhrase},
		{"a vsan:// parent", inline("1", "vmfs", `RW 2048 VMFS "x-flat.vmdk"`, "vsan://52f3a1d0/p.vmdk"), "x-flat.vmdk", vsanPhrase},
		{"vSAN after an unknown version", inline("9", "vmfs", `RW 2048 VMFS "vsan://52f3a1d0"`, ""), "", vsanPhrase},
	} {
		t.Run(c.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.phrase) {
					t.Errorf("%s: %v, want ErrUnsupported saying %q", what, err, c.phrase)
				}
			}
			_, err := ParseDescriptor(c.text)
			check("ParseDescriptor", err)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "d.vmdk"), c.text)
			if c.file != "" {
				writeFile(t, filepath.Join(dir, c.file), make([]byte, 1<<20))
			}
			_, err = Open(filepath.Join(dir, "d.vmdk"), Options{})
			check("Open", err)
			_, err = OpenFS(os.DirFS(dir), "d.vmdk", Options{})
			check("OpenFS", err)
		})
	}
	// An unknown version still says so, though a later line is one it may
	// explain.
	for _, text := range [][]byte{
		inline("4", "vmfs", `RW 2048 VMFS "x-flat.vmdk"`, ""),
		append(inline("4", "vmfs", `RW 2048 VMFS "x-flat.vmdk"`, ""), "a line of version 4\n"...),
	} {
		if _, err := ParseDescriptor(text); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `descriptor version "4"`) {
			t.Errorf("version 4: %v, want ErrUnsupported: descriptor version", err)
		}
	}
}
