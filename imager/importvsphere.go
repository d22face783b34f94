package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// An import from vSphere: the VM's disk named by the --vsphere-* flags,
// resolved with the SDK, read in place from its datastore (transport
// datastore) or from an NFC export (transport nfc).

// vsphereFlags registers import's --vsphere-* flags (jobapi.VSphereArgs).
func vsphereFlags(fs *flag.FlagSet, v *jobapi.VSphereArgs) {
	fs.StringVar(&v.URL, "vsphere-url", "", "the SDK of a vCenter or ESXi host (https://host/sdk) to import a VM's disk from, instead of a source argument; credentials from --credentials-dir (username, password)")
	fs.StringVar(&v.Thumbprint, "vsphere-thumbprint", "", "the SHA-1 or SHA-256 thumbprint of the server's certificate (hex, colons optional); without it, the system's CAs and --ca-file's")
	fs.StringVar(&v.UUID, "vsphere-uuid", "", "the VM's BIOS or instance UUID")
	fs.StringVar(&v.InventoryPath, "vsphere-path", "", "the VM's inventory path (/DC/vm/folder/name)")
	fs.StringVar(&v.MoRef, "vsphere-moref", "", "the VM's managed object reference (vm-42)")
	fs.Int64Var(&v.DiskIndex, "vsphere-disk-index", 0, "the disk, from 0 in the VM's device order")
	fs.StringVar(&v.DiskLabel, "vsphere-disk-label", "", `the disk by its label ("Hard disk 2")`)
	fs.StringVar(&v.Snapshot, "vsphere-snapshot", "", "import the disk as of this snapshot (name or moref); needed for a running VM")
	fs.StringVar(&v.Transport, "vsphere-transport", jobapi.TransportDatastore, "datastore (read the chain's files in place) or nfc (an export lease)")
	fs.StringVar(&v.DeltaFrom, "vsphere-delta-from", "", "import only what changed since this snapshot (name or moref, an ancestor of --vsphere-snapshot), as a delta VMDK whose parent (-b) is the image imported at it")
}

// configureVSphere checks the --vsphere-* flags against the rest; its
// errors are usage errors. set: the flags given.
func (j *importJob) configureVSphere(v *jobapi.VSphereArgs, set map[string]bool, positional int, checksum string) error {
	if v.URL == "" {
		for name := range set {
			if len(name) > 8 && name[:8] == "vsphere-" {
				return fmt.Errorf("--%s applies with --vsphere-url", name)
			}
		}
		if j.backing != "" {
			return errors.New("-b applies with --vsphere-delta-from")
		}
		if positional != 1 {
			return fmt.Errorf("want 1 argument(s), got %d", positional)
		}
		return nil
	}
	if err := j.configureDelta(v); err != nil {
		return err
	}
	switch {
	case positional != 0:
		return errors.New("--vsphere-url is the source: give no source argument with it")
	case checksum != "":
		// Its bytes are several files read at random offsets, or a
		// stream the server makes for this export: no one checksum of
		// them is one the user could know beforehand.
		return errors.New("--checksum does not apply to a vSphere source (the chain's files are read in place, not as one stream)")
	case j.sourceFormat != "auto", j.ovaDisk != "":
		return errors.New("--source-format and --ova-disk do not apply to a vSphere source")
	case v.DeltaFrom == "" && (j.paths.root != "" || j.paths.unsafePaths):
		return errors.New("--root and --unsafe-paths apply to local files, not a vSphere source (but -b's, with --vsphere-delta-from)")
	case v.Transport != jobapi.TransportDatastore && v.Transport != jobapi.TransportNFC:
		return fmt.Errorf("--vsphere-transport %q: want %s or %s", v.Transport, jobapi.TransportDatastore, jobapi.TransportNFC)
	case v.DiskIndex < 0:
		return fmt.Errorf("--vsphere-disk-index %d: want 0 or more", v.DiskIndex)
	case v.DiskLabel != "" && set["vsphere-disk-index"]:
		return errors.New("--vsphere-disk-label and --vsphere-disk-index: give one")
	}
	n := 0
	for _, s := range []string{v.UUID, v.InventoryPath, v.MoRef} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("name the VM with exactly one of --vsphere-uuid, --vsphere-path and --vsphere-moref")
	}
	j.vsphere = v
	j.source = v.URL
	return nil
}

// fromVSphere imports the VM's disk the flags name.
func (j *importJob) fromVSphere() error {
	v := j.vsphere
	c, err := vsphere.Connect(j.ctx, vsphere.Options{URL: v.URL, Thumbprint: v.Thumbprint, HTTP: j.http, Log: j.log})
	if err != nil {
		return err
	}
	defer c.Close()
	d, err := vsphere.Resolve(j.ctx, c, vsphere.Selector{
		UUID: v.UUID, InventoryPath: v.InventoryPath, MoRef: v.MoRef,
		DiskIndex: v.DiskIndex, DiskLabel: v.DiskLabel, Snapshot: v.Snapshot,
		Transport: v.Transport,
	})
	if err != nil {
		return err
	}
	j.res.VSphere = d.Result()
	// A VMDK target (a delta too) says which disk at which point it is.
	j.vmdkOpts.image.DDB = stampOf(d).ddb()
	j.source = fmt.Sprintf("%s of VM %s", d.Label, d.VMName)
	if d.Snapshot != nil {
		j.source += " at snapshot " + j.res.VSphere.Snapshot
	}
	fmt.Fprintf(j.log, "imager: %s: %d bytes, backing chain %v\n", j.source, d.CapacityBytes, j.res.VSphere.BackingFiles)
	if v.DeltaFrom != "" {
		from, err := vsphere.Resolve(j.ctx, c, vsphere.Selector{
			UUID: v.UUID, InventoryPath: v.InventoryPath, MoRef: v.MoRef,
			DiskIndex: v.DiskIndex, DiskLabel: v.DiskLabel, Snapshot: v.DeltaFrom,
			Transport: v.Transport,
		})
		if err != nil {
			return fmt.Errorf("--vsphere-delta-from %s: %w", v.DeltaFrom, err)
		}
		above, err := vsphere.DeltaLinks(j.ctx, c, from, d)
		if err != nil {
			return err
		}
		fr := from.Result()
		j.res.VSphere.DeltaFrom, j.res.VSphere.BaseTop, j.res.VSphere.DeltaLinks = fr.Snapshot, fr.BackingFiles[0], above
		j.source += " since snapshot " + fr.Snapshot
		fmt.Fprintf(j.log, "imager: the delta since %s: the %d link(s) above %s\n", fr.Snapshot, above, fr.BackingFiles[0])
		// It rechecks the VM itself, before the delta takes its name.
		return vsphere.CopyRefused(j.ctx, c, d, j.fromVSphereDelta(c, from, d, above))
	}
	if d.Transport == jobapi.TransportNFC {
		err = j.fromVSphereExport(c, d)
	} else {
		err = j.fromVSphereDatastore(c, d)
	}
	if err != nil {
		return err
	}
	vsphereCopied(j.ctx, c, d)
	return vsphere.Recheck(j.ctx, c, d)
}

// vsphereCopied runs between the copy and its recheck: tests change the
// VM there, as a user could have while it was read.
var vsphereCopied = func(context.Context, *vsphere.Client, *vsphere.Disk) {}

// fromVSphereDatastore reads the disk's chain in place from its datastore.
func (j *importJob) fromVSphereDatastore(c *vsphere.Client, d *vsphere.Disk) error {
	vd, err := vsphere.OpenChain(j.ctx, c, d)
	if err != nil {
		return err
	}
	defer vd.Close()
	return vsphere.CopyRefused(j.ctx, c, d, j.fromImage(vmdkImage{vd}))
}

// configureDelta checks a delta import's flags (--vsphere-delta-from, -b)
// against the rest; its errors are usage errors.
func (j *importJob) configureDelta(v *jobapi.VSphereArgs) error {
	switch {
	case v.DeltaFrom == "" && j.backing != "":
		return errors.New("-b applies with --vsphere-delta-from")
	case v.DeltaFrom == "":
		return nil
	case j.backing == "":
		return errors.New("--vsphere-delta-from writes a delta VMDK: give its parent, the image imported at that snapshot, with -b")
	case j.targetFormat != "vmdk":
		return errors.New("--vsphere-delta-from writes a delta VMDK: give --target-format vmdk")
	case v.Transport != jobapi.TransportDatastore:
		// An export streams the whole disk: the delta's links are
		// only in the datastore's files.
		return errors.New("--vsphere-delta-from reads the delta's files on the datastore: give --vsphere-transport datastore")
	case j.vmdkOpts.subformat != vmdk.MonolithicSparse:
		return fmt.Errorf("--vsphere-delta-from writes a monolithicSparse delta, not %s", j.vmdkOpts.subformat)
	case j.targetMode == "block":
		return errors.New("--vsphere-delta-from writes a VMDK file: not with --target-mode block")
	}
	return nil
}
