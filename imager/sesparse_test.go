package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// TestConvertAndFlattenSESparseChain: an ESXi chain (a thin vmfs base, a
// vmfsSparse snapshot and two seSparse ones) converts to raw and flattens
// to one VMDK through the ordinary paths, reading as qemu-img reads the
// chain and as the chain's model says.
// esxiChain writes vmdktest's ESXi chain of size bytes in dir and returns
// it with the content it reads as (its model), which qemu-img must read
// too: a fixture both disagree on is wrong, whatever imager does.
func esxiChain(t *testing.T, dir string, size int64, o vmdktest.ChainOptions) (*vmdktest.Chain, []byte) {
	t.Helper()
	c, err := vmdktest.WriteESXiChain(dir, "vm", size, o)
	if err != nil {
		t.Fatal(err)
	}
	var model bytes.Buffer
	if _, err := c.Model.WriteTo(&model); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rawOf(t, dir, filepath.Base(c.Top)), model.Bytes()) {
		t.Fatal("qemu-img reads the generated chain other than its model")
	}
	return c, model.Bytes()
}

func TestConvertAndFlattenSESparseChain(t *testing.T) {
	dir := t.TempDir()
	const size = 24<<20 + 4096
	c, model := esxiChain(t, dir, size, vmdktest.ChainOptions{Deltas: 3, Seed: 11, VMFSSparse: true})
	raw := filepath.Join(dir, "ours.raw")
	if code, _, errs := imager("convert", "-O", "raw", c.Top, raw); code != 0 {
		t.Fatalf("convert: exit %d: %s", code, errs)
	}
	if ours, _ := os.ReadFile(raw); !bytes.Equal(ours, model) {
		t.Fatal("imager convert of the seSparse chain differs from qemu-img convert")
	}
	flat := filepath.Join(dir, "flat.vmdk")
	if code, _, errs := imager("flatten", c.Top, flat); code != 0 {
		t.Fatalf("flatten: exit %d: %s", code, errs)
	}
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "flat.vmdk", "flat.raw")
	if flatRaw, _ := os.ReadFile(filepath.Join(dir, "flat.raw")); !bytes.Equal(flatRaw, model) {
		t.Fatal("the flattened seSparse chain reads in qemu-img other than the chain")
	}
}

// TestConvertBareSESparse: a seSparse file given alone is refused with the
// way forward (detect lets vmdk decide; vmdk knows it is only a delta).
func TestConvertBareSESparse(t *testing.T) {
	dir := t.TempDir()
	c, err := vmdktest.WriteESXiChain(dir, "vm", 1<<20, vmdktest.ChainOptions{Deltas: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	bare := c.Files[len(c.Files)-1]
	code, _, errs := imager("convert", "-O", "raw", bare, filepath.Join(dir, "out.raw"))
	if code == 0 || !strings.Contains(errs, "open its descriptor") {
		t.Fatalf("convert of a bare seSparse extent: exit %d: %s", code, errs)
	}
}

// TestImportSESparseChain: import reads a seSparse chain from its top
// descriptor; a bare seSparse extent fails permanently with the way
// forward (detect lets vmdk decide rather than refusing every seSparse).
func TestImportSESparseChain(t *testing.T) {
	dir := t.TempDir()
	c, model := esxiChain(t, dir, 8<<20, vmdktest.ChainOptions{Deltas: 2, Seed: 12})
	target := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", target, c.Top)
	wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), model)
	target = t.TempDir()
	code, r, _, _ = runImportTest(t, "--target", target, c.Files[len(c.Files)-1])
	if code != jobapi.ExitPermanent || !strings.Contains(r.Message, "open its descriptor") {
		t.Fatalf("import of a bare seSparse extent: exit %d, %+v", code, r)
	}
}
