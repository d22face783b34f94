package vsphere

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Recheck, after the disk was read, checks that what was read stayed
// still: a VM read as it is is still off (or suspended) with the same
// top file, and was not started since Resolve; a snapshot still exists with the same chain. A VM powered on
// mid-read, or a snapshot deleted (its deltas consolidated into their
// parents), may have changed bytes already copied: the copy is not the
// disk at any one moment, and the import fails (ErrInUse, transient: a
// new attempt reads it whole again).
func Recheck(ctx context.Context, c *Client, d *Disk) error {
	pc := property.DefaultCollector(c.Vim)
	var vm mo.VirtualMachine
	props := []string{"runtime.powerState", "config.hardware.device"}
	err := pc.RetrieveOne(ctx, d.VM, props, &vm)
	if fault.Is(err, &types.NotAuthenticated{}) {
		// A long read outlived the session: log in again, once.
		if err := c.relogin(ctx); err != nil {
			return err
		}
		err = pc.RetrieveOne(ctx, d.VM, props, &vm)
	}
	if err != nil {
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
	} else if err := stayedOff(ctx, c, d); err != nil {
		return err
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

// ranEvents are the events of a VM starting to run (its guest may write
// its disks from then on).
var ranEvents = []string{"VmStartingEvent", "VmPoweredOnEvent", "VmResumingEvent"}

// stayedOff checks that the VM read as it is did not run since Resolve:
// one powered on and off again mid-read is in the same state after, with
// the same files, but its guest may have written blocks already copied.
// The server's events say; without them it cannot be told, and the read
// is not taken.
func stayedOff(ctx context.Context, c *Client, d *Disk) error {
	em := c.Vim.ServiceContent.EventManager
	if d.resolvedAt.IsZero() {
		return tag(ErrInvalidOptions, "VM %s, %s: not a disk Resolve found (no time it was resolved at): whether the VM ran since cannot be told", d.VMName, d.Label)
	}
	if em == nil {
		return tag(ErrTransient, "VM %s: the server keeps no events, so whether the VM ran while %s was read cannot be told: import a snapshot instead", d.VMName, d.Label)
	}
	since := d.resolvedAt
	// A collector, not QueryEvents, which ESXi's hostd does not answer.
	// Its latest page holds the last events that match: any is a run.
	hc, err := event.NewManager(c.Vim).CreateCollectorForEvents(ctx, types.EventFilterSpec{
		Entity:      &types.EventFilterSpecByEntity{Entity: d.VM, Recursion: types.EventFilterSpecRecursionOptionSelf},
		Time:        &types.EventFilterSpecByTime{BeginTime: &since},
		EventTypeId: ranEvents,
	})
	if err != nil {
		return sdkError(err, "VM %s: its events since the import began", d.VMName)
	}
	defer func() {
		// Hosts limit the collectors a session holds.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		_ = hc.Destroy(dctx)
	}()
	ran, err := hc.LatestPage(ctx)
	if err != nil {
		return sdkError(err, "VM %s: its events since the import began", d.VMName)
	}
	if len(ran) > 0 {
		e := ran[0].GetEvent()
		kind := strings.TrimPrefix(fmt.Sprintf("%T", ran[0]), "*types.")
		return tag(ErrInUse, "VM %s ran while %s was read (%s at %s), so its guest may have written blocks already copied: keep it powered off and import again, or import a snapshot",
			d.VMName, d.Label, kind, e.CreatedTime.Format(time.RFC3339))
	}
	return nil
}
