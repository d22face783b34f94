package main

import (
	"context"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// fromVSphereExport imports the disk from an NFC export lease: the
// host's streamOptimized stream of the whole chain, imported as it
// arrives (no scratch space), the lease told the progress and completed
// only once the stream proved its end.
func (j *importJob) fromVSphereExport(c *vsphere.Client, d *vsphere.Disk) error {
	o := vsphere.ExportOptions{Imported: j.prog.Done, Log: j.log}
	return vsphere.Export(j.ctx, c, d, o, func(_ context.Context, sr *vmdk.StreamReader) error {
		return j.fromStreamReader(sr)
	})
}
