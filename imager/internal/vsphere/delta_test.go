package vsphere

import (
	"errors"
	"testing"

	"github.com/vmware/govmomi/vim25/types"
)

// A delta's links are the chain's above the earlier point's, which must
// be exactly its last links on the same datastores; a chain vSphere
// relinked or consolidated in between is refused.
func TestLinksAbove(t *testing.T) {
	ds1 := types.ManagedObjectReference{Type: "Datastore", Value: "datastore-1"}
	ds2 := types.ManagedObjectReference{Type: "Datastore", Value: "datastore-2"}
	file := func(p string, ds types.ManagedObjectReference) File { return File{Path: p, Datastore: ds} }
	base, d1, d2 := file("[ds1] vm/vm.vmdk", ds1), file("[ds1] vm/vm-000001.vmdk", ds1), file("[ds1] vm/vm-000002.vmdk", ds1)
	disk := func(files ...File) *Disk { return &Disk{VMName: "vm", Label: "Hard disk 1", Chain: files} }
	for _, c := range []struct {
		name     string
		from, to *Disk
		want     int // 0: refused
	}{
		{"one link", disk(base), disk(d1, base), 1},
		{"two links", disk(base), disk(d2, d1, base), 2},
		{"from a delta", disk(d1, base), disk(d2, d1, base), 1},
		{"the same chain", disk(d1, base), disk(d1, base), 0},
		{"shorter", disk(d2, d1, base), disk(d1, base), 0},
		{"consolidated", disk(d1, base), disk(d2, base), 0},
		{"another base", disk(base), disk(d1, file("[ds1] vm/other.vmdk", ds1)), 0},
		{"the same path on another datastore", disk(base), disk(d1, file("[ds1] vm/vm.vmdk", ds2)), 0},
	} {
		got, err := linksAbove(c.from, c.to, "snapshot s2")
		switch {
		case c.want == 0 && !errors.Is(err, ErrChainBroken):
			t.Errorf("%s: %d, %v; want ErrChainBroken", c.name, got, err)
		case c.want != 0 && (err != nil || got != c.want):
			t.Errorf("%s: %d, %v; want %d", c.name, got, err, c.want)
		}
	}
}

// The ancestry of snapshots: up the tree from the later point, never
// sideways; the VM's state counts its current snapshot as its own point.
func TestSnapshotAncestor(t *testing.T) {
	ref := func(v string) types.ManagedObjectReference {
		return types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: v}
	}
	node := func(v string, kids ...types.VirtualMachineSnapshotTree) types.VirtualMachineSnapshotTree {
		return types.VirtualMachineSnapshotTree{Snapshot: ref(v), Name: v, ChildSnapshotList: kids}
	}
	// s1 -> s2 -> s3, and s1 -> b2 (a branch after a revert to s1).
	tree := []types.VirtualMachineSnapshotTree{node("s1", node("s2", node("s3")), node("b2"))}
	parents, err := snapshotParents(tree)
	if err != nil {
		t.Fatal(err)
	}
	at := func(v string) *types.ManagedObjectReference { r := ref(v); return &r }
	for _, c := range []struct {
		a, b   string
		orSelf bool
		want   bool
	}{
		{"s1", "s2", false, true},
		{"s1", "s3", false, true},
		{"s2", "s3", false, true},
		{"s3", "s1", false, false},
		{"s2", "b2", false, false},
		{"s1", "b2", false, true},
		{"s2", "s2", false, false},
		{"s2", "s2", true, true},
		{"s1", "nowhere", false, false},
	} {
		if got := ancestor(parents, ref(c.a), at(c.b), c.orSelf); got != c.want {
			t.Errorf("ancestor(%s, %s, orSelf %v) = %v", c.a, c.b, c.orSelf, got)
		}
	}
	if ancestor(parents, ref("s1"), nil, true) {
		t.Error("an ancestor of no snapshot")
	}
	dup := []types.VirtualMachineSnapshotTree{node("s1", node("s1"))}
	if _, err := snapshotParents(dup); !errors.Is(err, ErrChainBroken) {
		t.Errorf("a snapshot twice in the tree: %v", err)
	}
}
