package vmdktest_test

import (
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// A base disk and a seSparse snapshot over it, and the content the
// snapshot's descriptor must read as.
func ExampleWriteSESparseDelta() {
	dir, err := os.MkdirTemp("", "vmdktest")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	const size = 8 << 20
	base := vmdktest.MixedContent(1, size)
	cid, err := vmdktest.WriteVMFSBase(dir, "vm", base, size, vmdktest.VMFSOptions{Thin: true})
	if err != nil {
		log.Fatal(err)
	}
	grains := []vmdktest.Grain{
		{Index: 0, Data: []byte("new boot sector")},
		{Index: 1, Kind: vmdktest.Zero},
		{Index: 2, Kind: vmdktest.Unmapped},
	}
	if _, err := vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, vmdktest.SESparseOptions{}); err != nil {
		log.Fatal(err)
	}
	model := &vmdktest.Model{Size: size, Base: base, BaseSize: size, Layers: []vmdktest.Layer{vmdktest.LayerOf(grains)}}
	p := make([]byte, 15)
	model.ReadAt(p, 0)
	fmt.Printf("%s\n", p)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fmt.Println(e.Name())
	}
	// Output:
	// new boot sector
	// vm-000001-sesparse.vmdk
	// vm-000001.vmdk
	// vm-flat.vmdk
	// vm.vmdk
}

// A deterministic ESXi chain and the checksum of its expected content, as
// hack/esxichain prints it (the same for the same size, deltas and seed).
func ExampleWriteESXiChain() {
	dir, err := os.MkdirTemp("", "vmdktest")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := vmdktest.WriteESXiChain(dir, "vm", 4<<20, vmdktest.ChainOptions{Deltas: 2, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	sum := sha256.New()
	n, err := c.Model.WriteTo(sum)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(c.Top), len(c.Files), "files,", n, "bytes, sha256", len(fmt.Sprintf("%x", sum.Sum(nil))), "hex digits")
	// Output: vm-000002.vmdk 6 files, 4194304 bytes, sha256 64 hex digits

}
