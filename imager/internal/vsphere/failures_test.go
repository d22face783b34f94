package vsphere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

func wantErr(t *testing.T, what string, err, want error, msgs ...string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("%s: %q, want %q in it", what, err, m)
		}
	}
}

// The VM by each selector, and what none of them finds.
func TestResolveSelectors(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 43})
	ctx := context.Background()
	var vm mo.VirtualMachine
	if err := v.vm.Properties(ctx, v.vm.Reference(), []string{"config.uuid", "config.instanceUuid"}, &vm); err != nil {
		t.Fatal(err)
	}
	ref := v.vm.Reference().Value
	for _, sel := range []Selector{
		{UUID: vm.Config.Uuid}, {UUID: strings.ToUpper(vm.Config.Uuid)}, {UUID: vm.Config.InstanceUuid},
		{InventoryPath: "/DC0/vm/DC0_H0_VM0"}, {MoRef: ref}, {MoRef: "VirtualMachine:" + ref},
	} {
		sel.Snapshot = "s1"
		d, err := Resolve(ctx, v.c, sel)
		if err != nil {
			t.Fatalf("%+v: %v", sel, err)
		}
		if d.VM.Value != ref || d.VMName != "DC0_H0_VM0" {
			t.Fatalf("%+v: found %s %s", sel, d.VM, d.VMName)
		}
	}
	for _, tc := range []struct {
		sel  Selector
		want error
		msgs []string
	}{
		{Selector{UUID: "00000000-0000-0000-0000-000000000000"}, ErrNotFound, []string{"no VM with BIOS or instance uuid"}},
		{Selector{InventoryPath: "/DC0/vm/nosuchvm"}, ErrNotFound, []string{"no VM at inventory path"}},
		{Selector{InventoryPath: "/DC0/vm/DC0_H0_VM[0]"}, ErrNotFound, []string{"no VM at inventory path"}},
		{Selector{InventoryPath: "/DC0/host"}, ErrNotFound, []string{"not a VM"}},
		{Selector{InventoryPath: "DC0/vm/DC0_H0_VM0"}, ErrInvalidOptions, []string{"full path"}},
		{Selector{MoRef: "vm-99999"}, ErrNotFound, []string{"vm-99999"}},
		{Selector{MoRef: "HostSystem:host-21"}, ErrInvalidOptions, []string{"not a VirtualMachine"}},
		{Selector{}, ErrInvalidOptions, []string{"exactly one"}},
		{Selector{MoRef: ref, InventoryPath: "/DC0/vm/DC0_H0_VM0"}, ErrInvalidOptions, []string{"exactly one"}},
		{Selector{MoRef: ref, Snapshot: "s9"}, ErrNotFound, []string{`no snapshot named "s9"`, `"s1" (` + v.s1.Value + `)`}},
		{Selector{MoRef: ref, Snapshot: "s1", DiskLabel: "Hard disk 3"}, ErrNotFound, []string{`no disk labelled "Hard disk 3"`, `"Hard disk 1", "Hard disk 2"`}},
		{Selector{MoRef: ref, Snapshot: "s1", DiskIndex: 2}, ErrNotFound, []string{"no disk 2: it has 2"}},
		{Selector{MoRef: ref, Snapshot: "s1", DiskLabel: "Hard disk 2"}, ErrNotFound, []string{"did not exist when snapshot \"s1\""}},
		{Selector{MoRef: ref, Snapshot: "s1", Transport: "vddk"}, ErrInvalidOptions, []string{"want datastore or nfc"}},
	} {
		_, err := Resolve(ctx, v.c, tc.sel)
		wantErr(t, fmt.Sprintf("%+v", tc.sel), err, tc.want, tc.msgs...)
	}
	dup := snapshot(t, v.vm, "s1")
	_, err := Resolve(ctx, v.c, Selector{MoRef: ref, Snapshot: "s1"})
	wantErr(t, "two snapshots named s1", err, ErrInvalidOptions, v.s1.Value, dup.Value, "by its moref")
	for _, spelling := range []string{v.s1.Value, v.s1.String()} {
		if d, err := Resolve(ctx, v.c, Selector{MoRef: ref, Snapshot: spelling}); err != nil || d.SnapshotName != "s1" || *d.Snapshot != v.s1 {
			t.Fatalf("s1 by moref %s among two s1: %v", spelling, err)
		}
	}
	// A snapshot named as another's moref: which is meant cannot be told.
	named := snapshot(t, v.vm, v.s2.Value)
	_, err = Resolve(ctx, v.c, Selector{MoRef: ref, Snapshot: v.s2.Value})
	wantErr(t, "a name that is another's moref", err, ErrInvalidOptions, `moref of snapshot "s2"`, named.Value, "VirtualMachineSnapshot:"+v.s2.Value)
	if d, err := Resolve(ctx, v.c, Selector{MoRef: ref, Snapshot: v.s2.String()}); err != nil || *d.Snapshot != v.s2 {
		t.Fatalf("s2 by %s: %v", v.s2.String(), err)
	}
}

// A running VM's snapshot is read only where the VM does not write.
func TestResolveRunningVMSnapshotNotFrozen(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 44})
	v.setDisks(v.s2, v.disk1("vm-000002.vmdk", "vm-000001.vmdk", "vm.vmdk"))
	_, err := Resolve(context.Background(), v.c, Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"})
	wantErr(t, "snapshot at the running top", err, ErrInUse, "the file it writes now", "vm-000002.vmdk")
	powerOff(t, v.vm) // nothing writes it now
	if _, err := Resolve(context.Background(), v.c, Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"}); err != nil {
		t.Fatal(err)
	}
}

// Disks the datastore transport cannot read say which transport can.
func TestResolveUnsupportedDisks(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 45})
	ctx := context.Background()
	sel := Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"}
	rdm := func(mode types.VirtualDiskCompatibilityMode) *types.VirtualDiskRawDiskMappingVer1BackingInfo {
		b := &types.VirtualDiskRawDiskMappingVer1BackingInfo{CompatibilityMode: string(mode), LunUuid: "0200000000"}
		b.FileName = "[LocalDS_0] chainvm/rdm.vmdk"
		b.Datastore = &v.ds
		return b
	}
	v.setDisks(v.s2, disk(2000, "Hard disk 1", chainSize, rdm(types.VirtualDiskCompatibilityModePhysicalMode)))
	_, err := Resolve(ctx, v.c, sel)
	wantErr(t, "physical RDM", err, ErrUnsupported, "physical mode", "copy the LUN")
	sel.Transport = jobapi.TransportNFC
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "physical RDM over NFC", err, ErrUnsupported, "physical mode")
	sel.Transport = ""
	v.setDisks(v.s2, disk(2000, "Hard disk 1", chainSize, rdm(types.VirtualDiskCompatibilityModeVirtualMode)))
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "virtual RDM", err, ErrUnsupported, "virtual mode", "transport nfc")
	sel.Transport = jobapi.TransportNFC
	if d, err := Resolve(ctx, v.c, sel); err != nil || paths(d) != "[LocalDS_0] chainvm/rdm.vmdk" {
		t.Fatalf("virtual RDM over NFC: %v", err)
	}
	sel.Transport = ""

	v.setDisks(v.s2, v.disk1("vm-000001.vmdk", "vm.vmdk"))
	v.edit(v.ds, func(obj mo.Reference) { obj.(*simulator.Datastore).Summary.Type = "vsan" })
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "vSAN", err, ErrUnsupported, "vSAN", "transport nfc")
	sel.Transport = jobapi.TransportNFC
	d, err := Resolve(ctx, v.c, sel)
	if err != nil || len(d.Chain) != 2 || d.Chain[0].URL != nil {
		t.Fatalf("vSAN over NFC: %v", err)
	}
	_, err = OpenChain(ctx, v.c, d)
	wantErr(t, "OpenChain of an NFC disk", err, ErrInvalidOptions)
	sel.Transport = ""
	v.edit(v.ds, func(obj mo.Reference) { obj.(*simulator.Datastore).Summary.Type = "VMFS" })

	b := v.disk1("vm-000001.vmdk", "vm.vmdk")
	b.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Parent.FileName = "[LocalDS_0] elsewhere/vm.vmdk"
	v.setDisks(v.s2, b)
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "chain in two directories", err, ErrUnsupported, "spans directories", "transport nfc")
}

// Chains vSphere reports that cannot be the disk's.
func TestResolveBrokenChains(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 46})
	ctx := context.Background()
	sel := Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"}
	loop := v.disk1("vm-000001.vmdk", "vm.vmdk", "vm-000001.vmdk")
	v.setDisks(v.s2, loop)
	_, err := Resolve(ctx, v.c, sel)
	wantErr(t, "a loop", err, ErrChainBroken, "loops")
	var deep []string
	for i := maxChain + 1; i > 0; i-- {
		deep = append(deep, fmt.Sprintf("vm-%06d.vmdk", i))
	}
	v.setDisks(v.s2, v.disk1(deep...))
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "too deep", err, ErrChainBroken, "more than 255 links")

	v.setDisks(v.s2, v.disk1("vm-000001.vmdk", "vm.vmdk"))
	v.edit(v.ds, func(obj mo.Reference) { obj.(*simulator.Datastore).Summary.Accessible = false })
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "inaccessible datastore", err, ErrTransient, "not accessible")
	v.edit(v.ds, func(obj mo.Reference) { obj.(*simulator.Datastore).Summary.Accessible = true })

	// vSphere names a chain the descriptors do not link: the delta's
	// descriptor names vm.vmdk, vSphere says data.vmdk.
	v.setDisks(v.s2, v.disk1("vm-000001.vmdk", "data.vmdk"))
	d, err := Resolve(ctx, v.c, sel)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenChain(ctx, v.c, d)
	wantErr(t, "chain mismatch", err, ErrChainBroken, "vm-000001.vmdk vm.vmdk", "data.vmdk")
	v.setDisks(v.s2, v.disk1("vm-000001.vmdk"))
	d, _ = Resolve(ctx, v.c, sel)
	_, err = OpenChain(ctx, v.c, d)
	wantErr(t, "a link vSphere does not name", err, ErrChainBroken)

	// The descriptors' size is not the capacity vSphere gives.
	wrongSize := v.disk1("vm-000001.vmdk", "vm.vmdk")
	wrongSize.CapacityInBytes += 512
	v.setDisks(v.s2, wrongSize)
	d, _ = Resolve(ctx, v.c, sel)
	_, err = OpenChain(ctx, v.c, d)
	wantErr(t, "another capacity", err, ErrChainBroken, fmt.Sprint("vSphere ", chainSize+512))

	// A parent on a datastore the VM does not use.
	other := v.disk1("vm-000001.vmdk", "vm.vmdk")
	parent := other.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Parent
	parent.FileName, parent.Datastore = "[OtherDS] chainvm/vm.vmdk", nil
	v.setDisks(v.s2, other)
	_, err = Resolve(ctx, v.c, sel)
	wantErr(t, "a parent on another datastore", err, ErrChainBroken, "not one of the VM's")

	// A file of the chain gone from the datastore.
	v.setDisks(v.s2, v.disk1("vm-000001.vmdk", "vm.vmdk"))
	if err := os.Remove(filepath.Join(v.dir, "vm-flat.vmdk")); err != nil {
		t.Fatal(err)
	}
	d, _ = Resolve(ctx, v.c, sel)
	_, err = OpenChain(ctx, v.c, d)
	wantErr(t, "a missing file", err, source.ErrNotFound, "vm-flat.vmdk")
}

// What was read stays still until the copy is done, or the import fails.
func TestRecheck(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 47})
	ctx := context.Background()
	snap, err := Resolve(ctx, v.c, Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Recheck(ctx, v.c, snap); err != nil {
		t.Fatal(err)
	}
	for _, changed := range [][]string{{"vm-000001.vmdk", "data.vmdk"}, {"vm-000001.vmdk"}} {
		v.setDisks(v.s2, v.disk1(changed...))
		wantErr(t, fmt.Sprintf("snapshot chain now %v", changed), Recheck(ctx, v.c, snap), ErrInUse, "changed while it was read")
	}
	task, err := v.vm.RemoveSnapshot(ctx, v.s2.Value, false, nil)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "snapshot removed", Recheck(ctx, v.c, snap), ErrInUse, "is gone")

	powerOff(t, v.vm)
	off, err := Resolve(ctx, v.c, Selector{MoRef: v.vm.Reference().Value})
	if err != nil {
		t.Fatal(err)
	}
	if err := Recheck(ctx, v.c, off); err != nil {
		t.Fatal(err)
	}
	task, err = v.vm.PowerOn(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "powered on", Recheck(ctx, v.c, off), ErrInUse, "went from poweredOff to poweredOn")
}

// A snapshot tree past any vSphere's is refused, not walked.
func TestSnapshotTreeBounded(t *testing.T) {
	tree := func(n int) []types.VirtualMachineSnapshotTree {
		root := types.VirtualMachineSnapshotTree{Name: "root"}
		for i := 1; i < n; i++ {
			root.ChildSnapshotList = append(root.ChildSnapshotList, types.VirtualMachineSnapshotTree{Name: fmt.Sprint(i)})
		}
		return []types.VirtualMachineSnapshotTree{root}
	}
	if all, err := flatten(tree(maxSnapshots)); err != nil || len(all) != maxSnapshots {
		t.Fatalf("%d snapshots: %d, %v", maxSnapshots, len(all), err)
	}
	_, err := flatten(tree(maxSnapshots + 1))
	wantErr(t, "one snapshot too many", err, ErrChainBroken)
}

// A suspended VM is read as it is: nothing writes its disks until it
// resumes.
func TestResolveSuspendedVM(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 48})
	v.edit(v.vm.Reference(), func(obj mo.Reference) {
		obj.(*simulator.VirtualMachine).Runtime.PowerState = types.VirtualMachinePowerStateSuspended
	})
	d, got := v.read(t, Selector{MoRef: v.vm.Reference().Value})
	if d.PowerState != types.VirtualMachinePowerStateSuspended || len(d.Chain) != 3 || !bytes.Equal(got, v.content(t, 2)) {
		t.Fatalf("suspended: %s, chain %s", d.PowerState, paths(d))
	}
}

// A 403 for a chain's file while the VM runs is the host's lock on it:
// the SDK took the credentials.
func TestRefusedWhileRunning(t *testing.T) {
	forbidden := fmt.Errorf("open: %w", &source.HTTPStatusError{URL: "https://esxi/folder/vm/vm.vmdk", Status: "403 Forbidden", Code: 403})
	on := &Disk{VMName: "web", PowerState: types.VirtualMachinePowerStatePoweredOn}
	wantErr(t, "running", refused(on, forbidden), ErrInUse, "403 Forbidden", "power the VM off", "transport nfc")
	if err := refused(on, forbidden); !errors.Is(err, source.ErrUnauthorized) {
		t.Fatalf("the status is lost: %v", err)
	}
	off := &Disk{VMName: "web", PowerState: types.VirtualMachinePowerStatePoweredOff}
	if err := refused(off, forbidden); errors.Is(err, ErrInUse) {
		t.Fatalf("powered off: %v", err)
	}
	if err := refused(on, source.ErrNotFound); errors.Is(err, ErrInUse) {
		t.Fatalf("404 while running: %v", err)
	}
}

// The host's lock, as test/vcenter's /folder keeps it on a running VM's
// top link: a chain that reached it would be refused SourceInUse.
func TestOpenChainLockedFile(t *testing.T) {
	f, err := vcenter.Start(context.Background(), vcenter.Options{Seed: 49, Size: 1<<20 + 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := Options{URL: f.URL, Thumbprint: f.ThumbprintSHA256, HTTP: source.HTTPOptions{CredsDir: credsDir(t, f.Username, f.Password), Connections: 1}}
	c, err := Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	on := f.VMs[1]
	d, err := Resolve(context.Background(), c, Selector{MoRef: on.MoRef, Snapshot: "s2"})
	if err != nil {
		t.Fatal(err)
	}
	// As if vSphere had named the running top as the snapshot's.
	top := on.Disks[0].Files[0]
	u, err := url.Parse(f.FolderURL(top))
	if err != nil {
		t.Fatal(err)
	}
	d.Chain = append([]File{{Path: top, Datastore: d.Chain[0].Datastore, URL: u}}, d.Chain...)
	_, err = OpenChain(context.Background(), c, d)
	wantErr(t, "the running top", err, ErrInUse, "power the VM off", "transport nfc")
}

// A capacity in KB only (older hosts) is taken; one that does not fit in
// bytes, or none, is not a disk to read.
func TestResolveCapacity(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 50})
	sel := Selector{MoRef: v.vm.Reference().Value, Snapshot: "s2"}
	for _, tc := range []struct {
		kb   int64
		want int64 // 0: refused
	}{{chainSize / 1024, chainSize}, {1<<54 + 1, 0} /* times 1024 wraps to 1024 */, {math.MaxInt64/1024 + 1, 0}, {0, 0}} {
		d := v.disk1("vm-000001.vmdk", "vm.vmdk")
		d.CapacityInBytes, d.CapacityInKB = 0, tc.kb
		v.setDisks(v.s2, d)
		got, err := Resolve(context.Background(), v.c, sel)
		if tc.want == 0 {
			wantErr(t, fmt.Sprintf("%d KB", tc.kb), err, ErrChainBroken, "no capacity")
			continue
		}
		if err != nil || got.CapacityBytes != tc.want {
			t.Fatalf("%d KB: %v", tc.kb, err)
		}
	}
}
