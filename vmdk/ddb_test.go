package vmdk

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A caller's DDB entries are in the descriptor of every subformat Create
// writes, after the package's own, and read back as they were given
// (quotes, blanks at either end, '=', '#' and UTF-8 included); qemu-img
// takes the image.
func TestCreateCallerDDB(t *testing.T) {
	extra := []KeyValue{
		{"ddb.vmdkpop.vsphere.vm", "564d8a3c-0000-4a4b-9c1e-5e6f7a8b9c0d"},
		{"ddb.vmdkpop.vsphere.top", `[datastore 1] vm "a"/vm-000001.vmdk`},
		{"ddb.x-y_z", ` blanks = and # kept, ünïcode `},
		{"ddb.empty", ""},
	}
	for _, sub := range []Subformat{MonolithicSparse, TwoGbMaxExtentSparse, MonolithicFlat, StreamOptimized} {
		t.Run(string(sub), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "d.vmdk")
			if err := Create(p, CreateOptions{Subformat: sub, ImageOptions: ImageOptions{Size: 3 << 20, DDB: extra}}); err != nil {
				t.Fatal(err)
			}
			d := mustOpen(t, p, Options{})
			ddb := d.Descriptor().DDB
			d.Close()
			if len(ddb) != len(ownDDBKeys)+len(extra) || !slices.Equal(ddb[len(ownDDBKeys):], extra) {
				t.Fatalf("DDB %q, want the package's %d entries, then %q", ddb, len(ownDDBKeys), extra)
			}
			sh(t, dir, "qemu-img", "check", "-f", "vmdk", "d.vmdk")
		})
	}
}

// Entries that would not read back as given, or would shadow another,
// are refused before anything is written; so is every key the package
// writes itself.
func TestCreateCallerDDBRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vmdk")
	o := ImageOptions{Size: 1 << 20}
	var bad [][]KeyValue
	for _, kv := range newDescriptor(&o, MonolithicSparse, nil).DDB {
		bad = append(bad, []KeyValue{{kv.Key, "1"}}, []KeyValue{{strings.ToUpper(kv.Key[:5]) + kv.Key[5:], "1"}})
	}
	many := make([]KeyValue, maxExtraDDB+1)
	for i := range many {
		many[i] = KeyValue{"ddb.k" + string(rune('a'+i)), "v"}
	}
	bad = append(bad, many,
		[]KeyValue{{"ddb.a", "1"}, {"ddb.A", "2"}},
		[]KeyValue{{"ddb.", "v"}},
		[]KeyValue{{"comment", "v"}},
		[]KeyValue{{"DDB.upper", "v"}},
		[]KeyValue{{"ddb.a b", "v"}},
		[]KeyValue{{"ddb.a=b", "v"}},
		[]KeyValue{{"ddb." + strings.Repeat("k", maxDDBKeyBytes-3), "v"}},
		[]KeyValue{{"ddb.v", "two\nlines"}},
		[]KeyValue{{"ddb.v", "cr\r"}},
		[]KeyValue{{"ddb.v", "nul\x00"}},
		[]KeyValue{{"ddb.v", strings.Repeat("v", maxDDBValueBytes+1)}},
	)
	for _, ddb := range bad {
		for _, sub := range []Subformat{MonolithicSparse, StreamOptimized} {
			err := Create(p, CreateOptions{Subformat: sub, ImageOptions: ImageOptions{Size: 1 << 20, DDB: ddb}})
			if !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("%s, DDB %q: %v", sub, ddb, err)
			}
			if _, err := os.Stat(p); err == nil {
				t.Fatalf("%s, DDB %q: refused, but %s was written", sub, ddb, p)
			}
		}
	}
	// The longest of everything fits.
	most := make([]KeyValue, maxExtraDDB)
	for i := range most {
		most[i] = KeyValue{"ddb." + strings.Repeat(string(rune('a'+i)), maxDDBKeyBytes-4), strings.Repeat("v", maxDDBValueBytes)}
	}
	if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20, DDB: most}}); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, p, Options{})
	defer d.Close()
	if got := d.Descriptor().DDB; !slices.Equal(got[len(got)-maxExtraDDB:], most) {
		t.Fatal("the largest DDB did not read back")
	}
}
