package vmdk

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestSparseWriteRuns: one write spanning many grains appends its run of
// new grains with one pwrite, yet each grain lands where its own table
// entry says: zero grains stay unallocated (or, over a parent, are stored
// so they hide it), grains already stored are rewritten in place, and a
// partial last grain is padded. qemu-img reads the same and check is clean.
func TestSparseWriteRuns(t *testing.T) {
	const grain = 64 << 10
	const size = 20*grain + 4096 // a partial last grain
	for _, parent := range []bool{false, true} {
		t.Run(fmt.Sprintf("parent=%v", parent), func(t *testing.T) {
			dir := t.TempDir()
			p := installPowerFS(t, dir)
			top := filepath.Join(dir, "top.vmdk")
			model := make([]byte, size)
			opts := CreateOptions{ImageOptions: ImageOptions{Size: size}}
			if parent {
				base := filepath.Join(dir, "base.vmdk")
				if err := Create(base, opts); err != nil {
					t.Fatal(err)
				}
				bd := mustOpen(t, base, Options{ReadWrite: true})
				copy(model, bytes.Repeat([]byte{0xaa}, size))
				if _, err := bd.WriteAt(model, 0); err != nil {
					t.Fatal(err)
				}
				if err := bd.Close(); err != nil {
					t.Fatal(err)
				}
				opts = CreateOptions{Backing: base}
			}
			if err := Create(top, opts); err != nil {
				t.Fatal(err)
			}
			d := mustOpen(t, top, Options{ReadWrite: true})
			r := rand.New(rand.NewSource(5))
			write := func(buf []byte, off int64) {
				t.Helper()
				if _, err := d.WriteAt(buf, off); err != nil {
					t.Fatalf("WriteAt(%d, %d): %v", off, len(buf), err)
				}
				copy(model[off:], buf)
			}
			// Grains 4 and 9 stored first, one write each.
			for _, g := range []int64{4, 9} {
				buf := make([]byte, grain)
				r.Read(buf)
				write(buf, g*grain)
			}
			p.mark("runs")
			// Then one write of grains 1 to the end: 3 and 12 are zeros,
			// the rest data.
			buf := make([]byte, size-grain)
			r.Read(buf)
			for _, g := range []int{3, 12} {
				clear(buf[(g-1)*grain : g*grain])
			}
			write(buf, grain)
			writes := p.grainWritesSince("runs", "top.vmdk")
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			// New grains: 1-2, 5-8, 10-11, 13-19 are runs; 20 is partial.
			// Stored grains 4 and 9 are rewritten in place. Over a parent
			// the zero grains need data to hide it, and join their runs
			// (1-3, 10-19).
			wantWrites := 4 + 1 + 2
			stored := int64(2 + 2 + 4 + 2 + 7 + 1)
			if parent {
				wantWrites, stored = 6, stored+2
			}
			if writes != wantWrites {
				t.Errorf("the spanning write made %d writes to the image, want %d", writes, wantWrites)
			}
			d = mustOpen(t, top, Options{})
			sameBytes(t, "read back", readAll(t, d), model)
			fi, err := os.Stat(top)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(d.Header().OverHead)*SectorSize + stored*grain; fi.Size() != want {
				t.Errorf("image is %d bytes, want %d: %d grains after the metadata", fi.Size(), want, stored)
			}
			d.Close()
			writeFile(t, filepath.Join(dir, "model.raw"), model)
			sh(t, dir, "qemu-img", "check", "top.vmdk")
			sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "top.vmdk", "model.raw")
		})
	}
}

// grainWritesSince counts the writes to the file name in p's directory
// recorded after mark.
func (p *powerFS) grainWritesSince(mark, name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, seen := 0, false
	for _, op := range p.ops {
		switch {
		case op.kind == opMark && op.mark == mark:
			seen = true
		case seen && op.kind == opWrite && op.ino == p.ino[name]:
			n++
		}
	}
	return n
}

// TestSparseCloseUnsynced: CloseUnsynced writes the grain tables (and
// their redundant copies) with no sync at all, and the image reads as
// written; Close, for the same writes, syncs the grains before it writes
// the first table.
func TestSparseCloseUnsynced(t *testing.T) {
	const size = 6<<20 + 4096
	for _, unsynced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsynced=%v", unsynced), func(t *testing.T) {
			dir := t.TempDir()
			p := installPowerFS(t, dir)
			top := filepath.Join(dir, "d.vmdk")
			if err := Create(top, CreateOptions{ImageOptions: ImageOptions{Size: size}}); err != nil {
				t.Fatal(err)
			}
			d := mustOpen(t, top, Options{ReadWrite: true})
			model := make([]byte, size)
			r := rand.New(rand.NewSource(6))
			r.Read(model[:1<<20])
			r.Read(model[3<<20 : 5<<20])
			if _, err := d.WriteAt(model[:1<<20], 0); err != nil { // CID changed and synced here
				t.Fatal(err)
			}
			p.mark("written")
			if _, err := d.WriteAt(model[3<<20:5<<20], 3<<20); err != nil {
				t.Fatal(err)
			}
			p.mark("close")
			var err error
			if unsynced {
				err = d.CloseUnsynced()
			} else {
				err = d.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			syncs, tablesAfterSync := p.closeOps("close", "d.vmdk", 64<<10)
			if unsynced && syncs != 0 {
				t.Errorf("CloseUnsynced synced %d times", syncs)
			}
			if !unsynced && (syncs == 0 || !tablesAfterSync) {
				t.Errorf("Close synced %d times, tables only after a sync: %v", syncs, tablesAfterSync)
			}
			if rep := mustCheck(t, top, false); !rep.Clean() || rep.Grains != 48 {
				t.Errorf("check: %+v", rep)
			}
			d = mustOpen(t, top, Options{})
			sameBytes(t, "read back", readAll(t, d), model)
			d.Close()
			writeFile(t, filepath.Join(dir, "m.raw"), model)
			sh(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "d.vmdk", "m.raw")
		})
	}
}

// closeOps counts the syncs of file name recorded after mark, and says
// whether every write smaller than grain (a grain table's) came after one.
func (p *powerFS) closeOps(mark, name string, grain int) (syncs int, tablesAfterSync bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen, tablesAfterSync := false, true
	for _, op := range p.ops {
		switch {
		case op.kind == opMark && op.mark == mark:
			seen = true
		case !seen || op.ino != p.ino[name]:
		case op.kind == opSync:
			syncs++
		case op.kind == opWrite && len(op.data) < grain && syncs == 0:
			tablesAfterSync = false
		}
	}
	return syncs, tablesAfterSync
}
