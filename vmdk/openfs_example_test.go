package vmdk_test

import (
	"bytes"
	"fmt"
	"log"
	"testing/fstest"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// OpenFS reads a disk whose files are anywhere an fs.FS reaches: here a
// vSphere-style descriptor and its -flat extent in memory; an HTTP
// datastore browser is the same with another fs.FS.
func ExampleOpenFS() {
	fsys := fstest.MapFS{
		"vm/vm.vmdk": {Data: []byte(`# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 2048 VMFS "vm-flat.vmdk"
`)},
		"vm/vm-flat.vmdk": {Data: bytes.Repeat([]byte("guest data"), 1<<20/10+1)[:1<<20]},
	}
	d, err := vmdk.OpenFS(fsys, "vm/vm.vmdk", vmdk.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	p := make([]byte, 10)
	if _, err := d.ReadAt(p, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.CreateType(), d.Size(), d.Files())
	fmt.Printf("%s\n", p)
	// Output:
	// vmfs 1048576 [vm/vm.vmdk vm/vm-flat.vmdk]
	// guest data
}
