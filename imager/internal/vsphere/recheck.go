package vsphere

import (
	"context"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Recheck, after the disk was read, checks that what was read stayed
// still: a VM read as it is is still off (or suspended) with the same
// top file; a snapshot still exists with the same chain. A VM powered on
// mid-read, or a snapshot deleted (its deltas consolidated into their
// parents), may have changed bytes already copied: the copy is not the
// disk at any one moment, and the import fails (ErrInUse, transient: a
// new attempt reads it whole again).
func Recheck(ctx context.Context, c *Client, d *Disk) error {
	pc := property.DefaultCollector(c.Vim)
	var vm mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, d.VM, []string{"runtime.powerState", "config.hardware.device"}, &vm); err != nil {
		return sdkError(err, "VM %s after the import", d.VMName)
	}
	devices := []types.BaseVirtualDevice(nil)
	if vm.Config != nil {
		devices = vm.Config.Hardware.Device
	}
	if d.Snapshot != nil {
		var snap mo.VirtualMachineSnapshot
		if err := pc.RetrieveOne(ctx, *d.Snapshot, []string{"config.hardware.device"}, &snap); err != nil {
			return tag(ErrInUse, "VM %s: snapshot %s (%s) is gone after the import (deleted while it was read?): import again: %v", d.VMName, d.SnapshotName, d.Snapshot.Value, err)
		}
		devices = snap.Config.Hardware.Device
	} else if vm.Runtime.PowerState != d.PowerState {
		return tag(ErrInUse, "VM %s went from %s to %s while its disk was read: power it off and import again, or import a snapshot", d.VMName, d.PowerState, vm.Runtime.PowerState)
	}
	for _, dev := range devices {
		if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == d.Device.Key {
			ls, err := links(disk.Backing, d.Transport)
			if err != nil {
				return err
			}
			same := len(ls) == len(d.Chain)
			for i := 0; same && i < len(ls); i++ {
				same = ls[i].file == d.Chain[i].Path
			}
			if !same {
				return tag(ErrInUse, "VM %s: the backing chain of %s changed while it was read (from %s): import again", d.VMName, d.Label, chainString(d.Chain))
			}
			return nil
		}
	}
	return tag(ErrInUse, "VM %s: %s is gone after the import: import again", d.VMName, d.Label)
}
