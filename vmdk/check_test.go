package vmdk

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkImage makes a monolithicSparse image with some grains written.
func checkImage(t *testing.T) (dir, path string) {
	dir = t.TempDir()
	path = filepath.Join(dir, "c.vmdk")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "c.vmdk", "8M")
	qemuIO(t, dir, "c.vmdk", "write -P 1 0 256k", "write -P 2 5m 64k")
	return dir, path
}

func mustCheck(t *testing.T, path string, repair bool) *CheckReport {
	t.Helper()
	r, err := Check(context.Background(), path, CheckOptions{Repair: repair})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCheckClean(t *testing.T) {
	_, path := checkImage(t)
	if r := mustCheck(t, path, false); !r.Clean() || r.Grains != 5 {
		t.Fatalf("%+v", r)
	}
	// Our own writers' output is clean too.
	dir := t.TempDir()
	p := filepath.Join(dir, "s.vmdk")
	writeFile(t, p, writeStream(t, mixedContent(1, 3<<20), StreamOptions{}))
	if r := mustCheck(t, p, false); !r.Clean() {
		t.Fatalf("stream: %+v", r)
	}
}

// patchGTE rewrites entry j of grain table 0 (primary, or redundant).
func patchGTE(t *testing.T, path string, redundant bool, j int, v uint32) {
	d := mustOpen(t, path, Options{})
	e := d.extents[0].ext.(*sparseExtent)
	sector := e.gd[0]
	if redundant {
		sector = e.rgd[0]
	}
	d.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	f.WriteAt(b[:], int64(sector)*SectorSize+int64(j)*4)
}

func TestCheckFindsAndRepairs(t *testing.T) {
	t.Run("leaked tail", func(t *testing.T) {
		_, path := checkImage(t)
		f, _ := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
		f.Write(make([]byte, 128<<10)) // an interrupted writer's grains
		f.Close()
		r := mustCheck(t, path, false)
		if len(r.Corruptions) != 0 || r.LeakedBytes != 128<<10 {
			t.Fatalf("%+v", r)
		}
		if r := mustCheck(t, path, true); len(r.Repaired) != 1 {
			t.Fatalf("repair: %+v", r)
		}
		if r := mustCheck(t, path, false); !r.Clean() {
			t.Fatalf("after repair: %+v", r)
		}
	})
	t.Run("bad primary table", func(t *testing.T) {
		dir, path := checkImage(t)
		want := qemuRaw(t, dir, "c.vmdk")
		patchGTE(t, path, false, 1, 0x7fffffff)
		r := mustCheck(t, path, false)
		if len(r.Corruptions) == 0 || !strings.Contains(strings.Join(r.Corruptions, "\n"), "differs from its redundant copy") {
			t.Fatalf("%+v", r)
		}
		mustCheck(t, path, true)
		if r := mustCheck(t, path, false); !r.Clean() {
			t.Fatalf("after repair: %+v", r)
		}
		sameBytes(t, "repaired image", readAll(t, mustOpen(t, path, Options{})), want)
	})
	t.Run("redundant table behind", func(t *testing.T) {
		// A writer killed between the primary and redundant copies.
		dir, path := checkImage(t)
		want := qemuRaw(t, dir, "c.vmdk")
		patchGTE(t, path, true, 0, 0)
		r := mustCheck(t, path, false)
		if len(r.Corruptions) != 0 || len(r.Leaks) != 1 || !strings.Contains(r.Leaks[0], "behind the primary") {
			t.Fatalf("%+v", r)
		}
		if r := mustCheck(t, path, true); len(r.Repaired) != 1 {
			t.Fatalf("repair: %+v", r)
		}
		if r := mustCheck(t, path, false); !r.Clean() {
			t.Fatalf("after repair: %+v", r)
		}
		sameBytes(t, "repaired image", readAll(t, mustOpen(t, path, Options{})), want)
	})
	t.Run("redundant table ahead", func(t *testing.T) {
		// The redundant copy can never be ahead: writers update it last.
		_, path := checkImage(t)
		patchGTE(t, path, false, 0, 0)
		if r := mustCheck(t, path, false); len(r.Corruptions) == 0 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("shared grain", func(t *testing.T) {
		_, path := checkImage(t)
		d := mustOpen(t, path, Options{})
		v, _ := d.extents[0].ext.(*sparseExtent).gte(0)
		d.Close()
		patchGTE(t, path, false, 2, v)
		patchGTE(t, path, true, 2, v)
		if r := mustCheck(t, path, false); !strings.Contains(strings.Join(r.Corruptions, "\n"), "share sectors") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("grain over metadata", func(t *testing.T) {
		_, path := checkImage(t)
		patchGTE(t, path, false, 3, 1+20)
		patchGTE(t, path, true, 3, 1+20)
		if r := mustCheck(t, path, false); !strings.Contains(strings.Join(r.Corruptions, "\n"), "overlaps the") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("broken chain", func(t *testing.T) {
		dir := t.TempDir()
		Create(filepath.Join(dir, "b.vmdk"), CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}})
		Create(filepath.Join(dir, "c.vmdk"), CreateOptions{Backing: filepath.Join(dir, "b.vmdk")})
		d := mustOpen(t, filepath.Join(dir, "b.vmdk"), Options{ReadWrite: true})
		d.WriteAt([]byte{1}, 0) // new CID
		d.Close()
		if r := mustCheck(t, filepath.Join(dir, "c.vmdk"), false); len(r.Corruptions) == 0 {
			t.Fatalf("%+v", r)
		}
	})
}
