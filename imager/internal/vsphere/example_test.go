package vsphere_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// A running VM's first disk as of its snapshot s2, read in place from the
// datastore: a simulated vCenter (test/vcenter) stands in for a real one.
func Example() {
	ctx := context.Background()
	vc, err := vcenter.Start(ctx, vcenter.Options{Size: 1<<20 + 4096})
	if err != nil {
		log.Fatal(err)
	}
	defer vc.Close()
	// The credentials as a mounted Secret holds them.
	creds, err := os.MkdirTemp("", "creds")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(creds)
	for name, v := range map[string]string{"username": vc.Username, "password": vc.Password} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			log.Fatal(err)
		}
	}

	c, err := vsphere.Connect(ctx, vsphere.Options{
		URL:        vc.URL,
		Thumbprint: vc.ThumbprintSHA256,
		HTTP:       source.HTTPOptions{CredsDir: creds},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	d, err := vsphere.Resolve(ctx, c, vsphere.Selector{InventoryPath: "/DC0/vm/vm-on", DiskLabel: "Hard disk 1", Snapshot: "s2"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.VMName, d.PowerState, d.Label, "at", d.SnapshotName)
	for _, f := range d.Chain {
		fmt.Println(f.Path)
	}
	disk, err := vsphere.OpenChain(ctx, c, d)
	if err != nil {
		log.Fatal(err)
	}
	defer disk.Close()
	fmt.Println(disk.Size(), "bytes")
	// Output:
	// vm-on poweredOn Hard disk 1 at s2
	// [LocalDS_0] vm-on/vm-on-000001.vmdk
	// [LocalDS_0] vm-on/vm-on.vmdk
	// 1052672 bytes
}
