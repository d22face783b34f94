package vmdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// twoDeltas writes a thick base under two seSparse deltas, the lower with
// grains of every kind, the upper overwriting some of them (and zeroing
// one the lower stores), and returns the chain and the deltas' grains.
func twoDeltas(t testing.TB, size int64) (seChain, [2][]vmdktest.Grain) {
	t.Helper()
	dir := t.TempDir()
	base := vmdktest.MixedContent(9, size)
	cid, err := vmdktest.WriteVMFSBase(dir, "vm", base, size, vmdktest.VMFSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lower := everyKind(size)
	upper := []vmdktest.Grain{
		{Index: 3, Kind: vmdktest.Zero},      // over lower data
		{Index: 4, Data: seFill(0x44)},       // over a lower zero grain
		{Index: 4096 + 7, Data: seFill(7)},   // in the lower's GD hole
		{Index: 10, Kind: vmdktest.Unmapped}, // over the base
	}
	if cid, err = vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, lower, vmdktest.SESparseOptions{FirstGrainIndex: 0x1001}); err != nil {
		t.Fatal(err)
	}
	if _, err = vmdktest.WriteSESparseDelta(dir, "vm-000002", "vm-000001.vmdk", cid, size, upper, vmdktest.SESparseOptions{}); err != nil {
		t.Fatal(err)
	}
	return seChain{dir: dir, top: "vm-000002.vmdk", model: &vmdktest.Model{
		Size: size, Base: base, BaseSize: size,
		Layers: []vmdktest.Layer{vmdktest.LayerOf(lower), vmdktest.LayerOf(upper)},
	}}, [2][]vmdktest.Grain{lower, upper}
}

// TestSESparseMap: Map through a two-delta chain says, grain by grain,
// which layer supplies the content and whether it is data (at a host
// offset that holds it), a zero or unmapped grain (zeros, allocated, not
// falling through), or the base's data.
func TestSESparseMap(t *testing.T) {
	const size = 40<<20 + 4096
	ch, layers := twoDeltas(t, size)
	d := mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
	maps, err := d.Map(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := modelRaw(t, ch.model)
	byLayer := [2]vmdktest.GrainMap{vmdktest.LayerOf(layers[0]), vmdktest.LayerOf(layers[1])}
	var pos int64
	for i, m := range maps {
		if m.Offset != pos || m.Length <= 0 {
			t.Fatalf("mapping %d: %+v does not follow byte %d", i, m, pos)
		}
		if i > 0 && maps[i-1].mergeable(m) {
			t.Fatalf("mappings %d and %d are mergeable: %+v %+v", i-1, i, maps[i-1], m)
		}
		pos += m.Length
		for g := m.Offset / seGrain; g*seGrain < m.Offset+m.Length; g++ {
			depth, kind := 2, vmdktest.Allocated // the base: flat data
			for l := 1; l >= 0; l-- {
				if gr, ok := byLayer[l][g]; ok {
					depth, kind = 1-l, gr.Kind
					break
				}
			}
			wantData := kind == vmdktest.Allocated
			if m.Depth != depth || m.Data != wantData || m.Zero == wantData || !m.Allocated {
				t.Fatalf("grain %d: mapping %+v, want depth %d, %s", g, m, depth, kind)
			}
		}
		if m.Data && m.Depth < 2 {
			if !strings.HasSuffix(m.File, "-sesparse.vmdk") || m.HostOffset < 0 {
				t.Fatalf("seSparse data mapping %+v", m)
			}
			got := make([]byte, m.Length)
			f, err := os.Open(m.File)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(got, m.HostOffset)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "data at the mapping's host offset", got, want[m.Offset:m.Offset+m.Length])
		}
	}
	if pos != size {
		t.Fatalf("mappings cover %d bytes of %d", pos, size)
	}
	sameBytes(t, "vmdk vs model", readAll(t, d), want)
	sameBytes(t, "vmdk vs qemu-img", readAll(t, d), qemuRaw(t, ch.dir, ch.top))
}

// TestSESparseConcurrentReads: readers in parallel, through a table cache
// of one table per extent (every table change an eviction), read what the
// model says. Run with -race.
func TestSESparseConcurrentReads(t *testing.T) {
	const size = 40<<20 + 4096
	ch, _ := twoDeltas(t, size)
	want := modelRaw(t, ch.model)
	d := mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
	for l := d; l != nil; l = l.parent {
		if se, ok := l.extents[0].ext.(*seSparseExtent); ok {
			se.cacheTables = 1
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for range 200 {
				off := r.Int63n(size)
				p := make([]byte, min(size-off, 1+r.Int63n(3*seGrain)))
				if _, err := d.ReadAt(p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, want[off:off+int64(len(p))]) {
					errs <- errors.New("a concurrent read differs from the model")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for l := d; l != nil; l = l.parent {
		if se, ok := l.extents[0].ext.(*seSparseExtent); ok && len(se.tables) > 1 {
			t.Fatalf("%s caches %d tables, bound 1", se.src.name, len(se.tables))
		}
	}
}

// TestSESparseReadOnly: a seSparse disk opened for writing refuses writes
// before its CID changes.
func TestSESparseReadOnly(t *testing.T) {
	ch := seBaseAndDelta(t, 1<<20, everyKind(1<<20), vmdktest.SESparseOptions{})
	top := filepath.Join(ch.dir, ch.top)
	before := readFileT(t, top)
	d := mustOpen(t, top, Options{ReadWrite: true})
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write into seSparse: %v", err)
	}
	d.Close()
	if !bytes.Equal(readFileT(t, top), before) {
		t.Fatal("the refused write changed the descriptor")
	}
}

// TestSESparseParentCID: a delta whose parentCID no longer matches its
// parent reads its own grains but fails, with ErrChainBroken, where it
// falls through; OpenFS reads the same chain.
func TestSESparseParentCID(t *testing.T) {
	const size = 1 << 20
	ch := seBaseAndDelta(t, size, everyKind(size), vmdktest.SESparseOptions{})
	d, err := OpenFS(os.DirFS(ch.dir), ch.top, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "OpenFS vs model", readAll(t, d), modelRaw(t, ch.model))
	d.Close()
	base := filepath.Join(ch.dir, "vm.vmdk")
	desc := string(readFileT(t, base))
	i := strings.Index(desc, "CID=")
	writeFile(t, base, []byte(desc[:i]+"CID=00000001"+desc[i+12:]))
	d = mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
	p := make([]byte, seGrain)
	if _, err := d.ReadAt(p, 3*seGrain); err != nil || !bytes.Equal(p, seFill(0x33)) {
		t.Fatalf("the delta's own grain: %v", err)
	}
	if _, err := d.ReadAt(p, 1*seGrain); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("fall-through read with a stale parentCID: %v", err)
	}
}

// TestSESparseMapMatchesQemu: grain by grain, Map says what qemu-img map
// says of the two-delta chain: the layer (depth), data or zero, and where
// data lies in that layer's file.
func TestSESparseMapMatchesQemu(t *testing.T) {
	const size = 40<<20 + 4096
	ch, _ := twoDeltas(t, size)
	type grainStatus struct {
		depth      int
		data, zero bool
		offset     int64
	}
	perGrain := func(start, length int64, s grainStatus, into map[int64]grainStatus) {
		for o := start; o < start+length; o += seGrain {
			g := s
			if g.data {
				g.offset += o - start
			}
			into[o/seGrain] = g
		}
	}
	var theirs []struct {
		Start, Length int64
		Depth         int
		Zero, Data    bool
		Offset        int64
	}
	if err := json.Unmarshal(sh(t, ch.dir, "qemu-img", "map", "-f", "vmdk", "--output=json", ch.top), &theirs); err != nil {
		t.Fatal(err)
	}
	want := map[int64]grainStatus{}
	for _, m := range theirs {
		perGrain(m.Start, m.Length, grainStatus{m.Depth, m.Data, m.Zero, m.Offset}, want)
	}
	d := mustOpen(t, filepath.Join(ch.dir, ch.top), Options{})
	maps, err := d.Map(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]grainStatus{}
	for _, m := range maps {
		s := grainStatus{depth: m.Depth, data: m.Data, zero: m.Zero}
		if m.Data {
			s.offset = m.HostOffset
		}
		perGrain(m.Offset, m.Length, s, got)
	}
	if len(got) != len(want) || len(got) != size/seGrain {
		t.Fatalf("%d grains mapped, qemu-img maps %d", len(got), len(want))
	}
	for g, w := range want {
		if got[g] != w {
			t.Fatalf("grain %d: Map says %+v, qemu-img map %+v", g, got[g], w)
		}
	}
}
