package vmdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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

// findings is a report's corruptions, one a line.
func findings(r *CheckReport) string { return strings.Join(r.Corruptions, "\n") }

// gteOf returns entry j of the image's first grain table and the file's
// size in sectors.
func gteOf(t *testing.T, path string, j int64) (v uint32, fileSectors int64) {
	d := mustOpen(t, path, Options{})
	defer d.Close()
	e := d.extents[0].ext.(*sparseExtent)
	v, err := e.gte(j)
	if err != nil {
		t.Fatal(err)
	}
	return v, (e.src.end() + SectorSize - 1) / SectorSize
}

// TestCheckFindsMisplacedGrains: entries that agree with their redundant
// copy but point at a sector no grain can start at, or at a grain that
// runs past the end of the file.
func TestCheckFindsMisplacedGrains(t *testing.T) {
	t.Run("not grain-aligned", func(t *testing.T) {
		_, path := checkImage(t)
		v, _ := gteOf(t, path, 1)
		patchGTE(t, path, false, 1, v+1)
		patchGTE(t, path, true, 1, v+1)
		r := mustCheck(t, path, false)
		if !strings.Contains(findings(r), "grain 1 (sector "+fmt.Sprint(v+1)+") is not grain-aligned") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("past the end of the file", func(t *testing.T) {
		_, path := checkImage(t)
		_, fileSectors := gteOf(t, path, 0)
		// Aligned (the file ends at a grain) but wholly past the end.
		patchGTE(t, path, false, 7, uint32(fileSectors))
		patchGTE(t, path, true, 7, uint32(fileSectors))
		r := mustCheck(t, path, false)
		if !strings.Contains(findings(r), "grain 7 (sector "+fmt.Sprint(fileSectors)+") lies past the end of the file") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("partly past the end of the file", func(t *testing.T) {
		_, path := checkImage(t)
		_, fileSectors := gteOf(t, path, 0)
		os.Truncate(path, (fileSectors-1)*SectorSize) // the last grain loses a sector
		r := mustCheck(t, path, false)
		if !strings.Contains(findings(r), "lies past the end of the file") {
			t.Fatalf("%+v", r)
		}
	})
}

// TestCheckStreamFooter: a stream whose footer disagrees with its header,
// or whose last sector is not the end-of-stream marker.
func TestCheckStreamFooter(t *testing.T) {
	stream := func(t *testing.T) (string, []byte) {
		p := filepath.Join(t.TempDir(), "s.vmdk")
		return p, writeStream(t, mixedContent(3, 1<<20), StreamOptions{})
	}
	t.Run("clean", func(t *testing.T) {
		p, img := stream(t)
		writeFile(t, p, img)
		if r := mustCheck(t, p, false); !r.Clean() {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("footer disagrees with the header", func(t *testing.T) {
		p, img := stream(t)
		capacity := binary.LittleEndian.Uint64(img[12:])
		binary.LittleEndian.PutUint64(img[12:], capacity+128) // the header's capacity
		writeFile(t, p, img)
		r := mustCheck(t, p, false)
		if !strings.Contains(findings(r), fmt.Sprintf("footer (capacity %d, grain 128) disagrees with the header (capacity %d, grain 128)", capacity, capacity+128)) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no end-of-stream marker", func(t *testing.T) {
		p, img := stream(t)
		img[len(img)-SectorSize] = 1
		writeFile(t, p, img)
		r := mustCheck(t, p, false)
		if !strings.Contains(findings(r), "the last sector is not an end-of-stream marker") {
			t.Fatalf("%+v", r)
		}
	})
}

// TestCheckHonoursContext: a cancelled Check returns the context's error,
// not a report.
func TestCheckHonoursContext(t *testing.T) {
	_, path := checkImage(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := Check(ctx, path, CheckOptions{})
	if !errors.Is(err, context.Canceled) || r != nil {
		t.Fatalf("Check with a cancelled context: %+v, %v", r, err)
	}
}
