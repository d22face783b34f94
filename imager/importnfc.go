package main

import (
	"context"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// fromVSphereExport imports the disk from an NFC export lease: the
// host's streamOptimized stream of the whole chain, imported as it
// arrives (no scratch space), the lease told the progress and completed
// only once the stream proved its end.
func (j *importJob) fromVSphereExport(c *vsphere.Client, d *vsphere.Disk) error {
	o := vsphere.ExportOptions{Imported: j.prog.Done, Log: j.log}
	return vsphere.Export(j.ctx, c, d, o, func(ctx context.Context, r io.Reader) error {
		sr, err := vmdk.NewStreamReader(r)
		if err != nil {
			return err
		}
		defer sr.Close()
		// The stream is the disk vSphere describes, or not the disk
		// asked for.
		if sr.Size() != d.CapacityBytes {
			return fmt.Errorf("%s: %w: the export streams a disk of %d bytes, vSphere gives %d: not the disk vSphere describes", j.source, vsphere.ErrChainBroken, sr.Size(), d.CapacityBytes)
		}
		return j.fromStreamReader(sr)
	})
}
