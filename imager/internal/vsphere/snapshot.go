package vsphere

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// maxSnapshots bounds the walk of a VM's snapshot tree as the server
// reports it (vSphere keeps at most 496 per VM; a server that sends more,
// or a loop, is not one to read from).
const maxSnapshots = 4096

// atSnapshot makes d the disk as of the snapshot named want (its moref,
// or its name, unique in the tree; a want that is one snapshot's moref
// and another's name is refused): the snapshot's own configuration's
// device with the same key.
func (d *Disk) atSnapshot(ctx context.Context, c *Client, vm *mo.VirtualMachine, want string) error {
	var all []types.VirtualMachineSnapshotTree
	if vm.Snapshot != nil {
		var err error
		if all, err = flatten(vm.Snapshot.RootSnapshotList); err != nil {
			return fmt.Errorf("VM %s: %w", vm.Name, err)
		}
	}
	var byName []types.VirtualMachineSnapshotTree
	var hit *types.VirtualMachineSnapshotTree
	for i, s := range all {
		if s.Snapshot.Value == want || s.Snapshot.String() == want {
			hit = &all[i]
		} else if s.Name == want {
			byName = append(byName, s)
		}
	}
	if hit != nil && len(byName) > 0 {
		// One snapshot's moref, another's name: either could be meant,
		// and the wrong one is a wrong disk reported as success.
		refs := make([]string, len(byName))
		for i, n := range byName {
			refs[i] = n.Snapshot.Value
		}
		return tag(ErrInvalidOptions, "VM %s: %q is both the moref of snapshot %q and the name of snapshot %s: rename that one, or give the moref as VirtualMachineSnapshot:%s",
			vm.Name, want, hit.Name, listed(refs), hit.Snapshot.Value)
	}
	if hit == nil {
		switch len(byName) {
		case 0:
			names := make([]string, len(all))
			for i, s := range all {
				names[i] = fmt.Sprintf("%q (%s)", s.Name, s.Snapshot.Value)
			}
			return tag(ErrNotFound, "VM %s has no snapshot named %q; its snapshots: %s", vm.Name, want, listed(names))
		case 1:
			hit = &byName[0]
		default:
			refs := make([]string, len(byName))
			for i, s := range byName {
				refs[i] = s.Snapshot.Value
			}
			return tag(ErrInvalidOptions, "VM %s has %d snapshots named %q (%s): name the snapshot by its moref", vm.Name, len(byName), want, listed(refs))
		}
	}
	var snap mo.VirtualMachineSnapshot
	if err := property.DefaultCollector(c.Vim).RetrieveOne(ctx, hit.Snapshot, []string{"config.hardware.device"}, &snap); err != nil {
		return sdkError(err, "VM %s, snapshot %q (%s)", vm.Name, hit.Name, hit.Snapshot.Value)
	}
	var then *types.VirtualDisk
	for _, dev := range snap.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == d.Device.Key {
			then = disk
		}
	}
	if then == nil {
		return tag(ErrNotFound, "VM %s: %s (device key %d) did not exist when snapshot %q (%s) was taken", vm.Name, d.Label, d.Device.Key, hit.Name, hit.Snapshot.Value)
	}
	ref := hit.Snapshot
	d.Snapshot, d.SnapshotName, d.Device = &ref, hit.Name, then
	return nil
}

// flatten lists a snapshot tree, each snapshot before its children: a
// stack, so a deep tree costs no recursion and each node is handled once.
func flatten(roots []types.VirtualMachineSnapshotTree) ([]types.VirtualMachineSnapshotTree, error) {
	var out []types.VirtualMachineSnapshotTree
	var stack []*types.VirtualMachineSnapshotTree
	push := func(l []types.VirtualMachineSnapshotTree) {
		for i := len(l) - 1; i >= 0; i-- {
			stack = append(stack, &l[i])
		}
	}
	push(roots)
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if len(out) >= maxSnapshots {
			return nil, tag(ErrChainBroken, "a snapshot tree of more than %d snapshots", maxSnapshots)
		}
		out = append(out, *s)
		push(s.ChildSnapshotList)
	}
	return out, nil
}
