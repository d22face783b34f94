package vsphere_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// A powered-off VM's first disk as it is, streamed from an NFC export
// lease (ExportVm) and written grain by grain as it arrives; the lease is
// completed once the stream proved its end. A simulated vCenter
// (test/vcenter) stands in for a real one.
func ExampleExport() {
	ctx := context.Background()
	vc, err := vcenter.Start(ctx, vcenter.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer vc.Close()
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
	c, err := vsphere.Connect(ctx, vsphere.Options{URL: vc.URL, Thumbprint: vc.ThumbprintSHA256, HTTP: source.HTTPOptions{CredsDir: creds}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	d, err := vsphere.Resolve(ctx, c, vsphere.Selector{InventoryPath: "/DC0/vm/vm-off", Transport: "nfc"})
	if err != nil {
		log.Fatal(err)
	}

	disk := make([]byte, d.CapacityBytes) // a target: here, memory
	err = vsphere.Export(ctx, c, d, vsphere.ExportOptions{}, func(ctx context.Context, sr *vmdk.StreamReader) error {
		for {
			g, err := sr.Next()
			if err == io.EOF { // the stream proved its end
				return nil
			}
			if err != nil {
				return err
			}
			copy(disk[g.Offset:], g.Data)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	want, err := vc.VMs[0].Disks[0].Bytes()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.VMName, d.Label, len(disk), "bytes, as written:", bytes.Equal(disk, want))
	// Output:
	// vm-off Hard disk 1 8392704 bytes, as written: true
}
