package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/test/datastore"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// A seSparse delta a guest wrote at random (a random quarter of the grains,
// stored in the order written) over a thin vmfs base is imported over the
// datastore API reading about what it uses: each file served at most
// twice its size, with one connection and with four, and the delta in
// fewer requests than it has grains. Reading such a delta in 1 MiB blocks
// with read-ahead fetched many times its size (716 MiB of a 38 MiB delta
// with one connection, 4690 MiB with four).
func TestImportHTTPScatteredDelta(t *testing.T) {
	dir := t.TempDir()
	const size = 128 << 20
	cid, err := vmdktest.WriteVMFSBase(dir, "vm", vmdktest.MixedContent(41, size), size, vmdktest.VMFSOptions{Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(41, 41))
	var grains []vmdktest.Grain
	for _, g := range rnd.Perm(size / vmdktest.GrainSize)[:size/vmdktest.GrainSize/4] {
		data := make([]byte, vmdktest.GrainSize)
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		grains = append(grains, vmdktest.Grain{Index: int64(g), Kind: vmdktest.Allocated, Data: data})
	}
	if _, err := vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, vmdktest.SESparseOptions{}); err != nil {
		t.Fatal(err)
	}
	want := rawOf(t, dir, "vm-000001.vmdk")
	sizes := map[string]int64{}
	for _, name := range []string{"vm-flat.vmdk", "vm-000001-sesparse.vmdk"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sizes[name] = st.Size()
	}
	for _, conns := range []string{"1", "4"} {
		var mu sync.Mutex
		servedBytes, servedReqs := map[string]int64{}, map[string]int64{}
		_, url, creds := serveChain(t, &httpChain{dir: dir}, "vm-000001.vmdk", func(ds *datastore.Server) {
			ds.Rewrite = func(name string, h http.Header) {
				n, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
				mu.Lock()
				defer mu.Unlock()
				servedBytes[name] += n
				servedReqs[name]++
			}
		})
		target := t.TempDir()
		start := time.Now()
		code, r, _, errs := runImportTest(t, append(append([]string{"--target", target, "--http-connections", conns}, creds...), url)...)
		wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
		mu.Lock()
		for name, sz := range sizes {
			t.Logf("x%s in %v: %s (%d MiB): %d MiB served in %d requests", conns, time.Since(start).Round(time.Millisecond), name, sz>>20, servedBytes[name]>>20, servedReqs[name])
			if servedBytes[name] > 2*sz {
				t.Errorf("--http-connections %s: %s: %s served for a file of %s", conns, name, mib(servedBytes[name]), mib(sz))
			}
		}
		// Small blocks are used (the cache holds most of the delta): not
		// a request per grain.
		if reqs := servedReqs["vm-000001-sesparse.vmdk"]; reqs >= int64(len(grains)) {
			t.Errorf("--http-connections %s: %d requests for the delta's %d grains", conns, reqs, len(grains))
		}
		mu.Unlock()
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
