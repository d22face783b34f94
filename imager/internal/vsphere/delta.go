package vsphere

import (
	"context"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// DeltaLinks checks that from (a disk as of an earlier snapshot) is what
// to (the same disk as of a later snapshot, or as the powered-off VM is
// now) was built on, and returns how many links of to's chain lie above
// from's: the files that hold what changed between the two, which are
// all a warm migration's next step needs to read.
//
// from's snapshot must be an ancestor of to's (of the VM's current
// snapshot, for to without one), and from's chain exactly the last links
// of to's, file for file on the same datastores. Anything else (a
// snapshot on another branch of the tree, a chain consolidated or
// relinked between the two) would make the links above from's not the
// difference between the two points: refused.
func DeltaLinks(ctx context.Context, c *Client, from, to *Disk) (int, error) {
	switch {
	case from.VM != to.VM:
		return 0, tag(ErrInvalidOptions, "the delta's two points are disks of different VMs (%s, %s)", from.VM.Value, to.VM.Value)
	case from.Device.Key != to.Device.Key:
		return 0, tag(ErrInvalidOptions, "VM %s: the delta's two points are different disks (device keys %d, %d)", to.VMName, from.Device.Key, to.Device.Key)
	case from.Snapshot == nil:
		return 0, tag(ErrInvalidOptions, "VM %s: a delta starts from a snapshot: name the one the base image was imported at", to.VMName)
	case to.Snapshot != nil && *to.Snapshot == *from.Snapshot:
		return 0, tag(ErrInvalidOptions, "VM %s: the delta's two points are the same snapshot %q: nothing changed between them", to.VMName, from.SnapshotName)
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Vim).RetrieveOne(ctx, to.VM, []string{"snapshot"}, &vm); err != nil {
		return 0, sdkError(err, "VM %s", to.VM.Value)
	}
	if vm.Snapshot == nil {
		return 0, tag(ErrNotFound, "VM %s has no snapshots now: snapshot %q is gone", to.VMName, from.SnapshotName)
	}
	parents, err := snapshotParents(vm.Snapshot.RootSnapshotList)
	if err != nil {
		return 0, tag(ErrChainBroken, "VM %s: %v", to.VMName, err)
	}
	later, what := vm.Snapshot.CurrentSnapshot, "the VM's current state"
	if to.Snapshot != nil {
		later, what = to.Snapshot, "snapshot "+to.SnapshotName
	}
	if !ancestor(parents, *from.Snapshot, later, to.Snapshot == nil) {
		return 0, tag(ErrInvalidOptions, "VM %s: snapshot %q (%s) is not an ancestor of %s: a delta holds only what changed since an earlier point of the same branch; import the base at an ancestor, or import this point whole", to.VMName, from.SnapshotName, from.Snapshot.Value, what)
	}
	return linksAbove(from, to, what)
}

// linksAbove is how many links of to's chain lie above from's, which
// must be exactly its last links, file for file on the same datastores.
// what names to's point in errors.
func linksAbove(from, to *Disk, what string) (int, error) {
	above := len(to.Chain) - len(from.Chain)
	if above < 1 {
		return 0, tag(ErrChainBroken, "VM %s, %s: the chain at %s (%s) is no longer than at snapshot %q (%s): no delta links between them", to.VMName, to.Label, what, chainString(to.Chain), from.SnapshotName, chainString(from.Chain))
	}
	for i, f := range from.Chain {
		if g := to.Chain[above+i]; g.Path != f.Path || g.Datastore != f.Datastore {
			return 0, tag(ErrChainBroken, "VM %s, %s: the chain at %s (%s) does not end with the chain at snapshot %q (%s): vSphere relinked or consolidated the disk in between; import this point whole", to.VMName, to.Label, what, chainString(to.Chain), from.SnapshotName, chainString(from.Chain))
		}
	}
	return above, nil
}

// snapshotParents maps each snapshot of a tree to its parent (roots to
// the zero reference), walked with a stack and bounded like flatten.
func snapshotParents(roots []types.VirtualMachineSnapshotTree) (map[types.ManagedObjectReference]types.ManagedObjectReference, error) {
	type node struct {
		t      *types.VirtualMachineSnapshotTree
		parent types.ManagedObjectReference
	}
	parents := map[types.ManagedObjectReference]types.ManagedObjectReference{}
	var stack []node
	for i := range roots {
		stack = append(stack, node{t: &roots[i]})
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, dup := parents[n.t.Snapshot]; dup {
			return nil, tag(ErrChainBroken, "snapshot %s appears twice in the snapshot tree", n.t.Snapshot.Value)
		}
		if len(parents) >= maxSnapshots {
			return nil, tag(ErrChainBroken, "a snapshot tree of more than %d snapshots", maxSnapshots)
		}
		parents[n.t.Snapshot] = n.parent
		for i := range n.t.ChildSnapshotList {
			stack = append(stack, node{t: &n.t.ChildSnapshotList[i], parent: n.t.Snapshot})
		}
	}
	return parents, nil
}

// ancestor: a is an ancestor of b in the tree parents describes (or b
// itself, when orSelf: the VM's state grows from its current snapshot).
func ancestor(parents map[types.ManagedObjectReference]types.ManagedObjectReference, a types.ManagedObjectReference, b *types.ManagedObjectReference, orSelf bool) bool {
	if b == nil {
		return false
	}
	cur, ok := *b, true
	if !orSelf {
		cur, ok = parents[cur]
	}
	// Each step goes up one level; a tree of n snapshots has at most n
	// levels, and parents has no loop (each snapshot was seen once).
	for steps := 0; ok && cur.Value != "" && steps <= len(parents); steps++ {
		if cur == a {
			return true
		}
		cur, ok = parents[cur]
	}
	return false
}
