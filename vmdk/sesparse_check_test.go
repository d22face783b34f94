package vmdk

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// TestSESparseCheckClean: Check of a generated chain's top finds nothing
// and counts the top delta's allocated grains.
func TestSESparseCheckClean(t *testing.T) {
	dir := t.TempDir()
	const size = 40 << 20
	c, err := vmdktest.WriteESXiChain(dir, "vm", size, vmdktest.ChainOptions{Deltas: 2, Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Check(context.Background(), c.Top, CheckOptions{})
	if err != nil || !r.Clean() {
		t.Fatalf("Check: %v %+v", err, r)
	}
	var want int64
	top := c.Model.Layers[1]
	for g := int64(0); g < size/seGrain; g++ {
		if gr, ok := top.Grain(g); ok && gr.Kind == vmdktest.Allocated {
			want++
		}
	}
	if want == 0 || r.Grains != want {
		t.Fatalf("Check counted %d grains, the top delta has %d", r.Grains, want)
	}
}

// TestSESparseCheckFindings: two entries pointing at one grain, two GD
// entries naming one table and bad entries are each reported; repair is
// refused before anything is written.
func TestSESparseCheckFindings(t *testing.T) {
	const size = 40 << 20
	for _, c := range []struct {
		name  string
		patch func(ext string)
		want  string
	}{
		{"duplicate-grain", func(ext string) {
			// Grain 6 takes grain 3's entry: both point at one grain.
			writeU64(t, ext, seGTEOffset(t, ext, 6), readU64(t, ext, seGTEOffset(t, ext, 3)))
		}, "which another grain table entry already points at"},
		{"shared-table", func(ext string) {
			gd := int64(readU64(t, ext, seField(seFieldGD))) * SectorSize
			writeU64(t, ext, gd+2*8, readU64(t, ext, gd))
		}, "both name grain table"},
		{"bad-type", func(ext string) {
			writeU64(t, ext, seGTEOffset(t, ext, 9), 0x5000000000000000)
		}, "type 5 is not a grain type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch := seBaseAndDelta(t, size, everyKind(size), vmdktest.SESparseOptions{})
			top := filepath.Join(ch.dir, ch.top)
			ext := filepath.Join(ch.dir, "vm-000001-sesparse.vmdk")
			if r, err := Check(context.Background(), top, CheckOptions{}); err != nil || !r.Clean() {
				t.Fatalf("before the patch: %v %+v", err, r)
			}
			c.patch(ext)
			r, err := Check(context.Background(), top, CheckOptions{})
			if err != nil || len(r.Corruptions) != 1 || !strings.Contains(r.Corruptions[0], c.want) {
				t.Fatalf("Check: %v %q, want one finding about %q", err, r.Corruptions, c.want)
			}
			before := readFileT(t, ext)
			if _, err := Check(context.Background(), top, CheckOptions{Repair: true}); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("repair of seSparse: %v", err)
			}
			sameBytes(t, "extent after a refused repair", readFileT(t, ext), before)
		})
	}
}

// seGTEOffset is the byte offset of grain g's GT entry in extent file ext,
// found through its GD entry.
func seGTEOffset(t testing.TB, ext string, g int64) int64 {
	t.Helper()
	gd := int64(readU64(t, ext, seField(seFieldGD))) * SectorSize
	e := readU64(t, ext, gd+g/4096*8)
	if e>>32 != seGDAllocated {
		t.Fatalf("grain %d has no grain table (GD entry %#x)", g, e)
	}
	gts := int64(readU64(t, ext, seField(seFieldGTs))) * SectorSize
	return gts + int64(e&0xffffffff)*seGTSectors*SectorSize + g%4096*8
}
