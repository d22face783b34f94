package vsphere

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Selector names a disk the way vSphere users do: the VM by exactly one
// of UUID, InventoryPath or MoRef; the disk by DiskLabel or DiskIndex;
// optionally the snapshot it is read as of.
type Selector struct {
	UUID          string // BIOS or instance UUID
	InventoryPath string // /DC/vm/folder/name
	MoRef         string // vm-42 (or VirtualMachine:vm-42)
	DiskIndex     int64  // from 0, in the VM's device order
	DiskLabel     string // "Hard disk 2", exactly
	Snapshot      string // a snapshot's name (unique in the VM's tree) or moref (snapshot-12)
	// Transport is how the disk will be read: jobapi.TransportDatastore
	// ("" too) or jobapi.TransportNFC. It decides which disks can be
	// (vSAN and virtual-mode RDMs only by NFC) and whether the chain's
	// /folder URLs are needed.
	Transport string
}

// Disk is a resolved disk: what will be read, and where it is.
type Disk struct {
	VM         types.ManagedObjectReference
	VMName     string
	PowerState types.VirtualMachinePowerState
	// Snapshot is the snapshot the disk is read as of (nil: the VM as it
	// is, powered off).
	Snapshot     *types.ManagedObjectReference
	SnapshotName string
	// Device is the virtual disk as of the snapshot (or now). Its Key
	// is the same in the VM and its snapshots, and names it in an export
	// lease's device URLs.
	Device        *types.VirtualDisk
	Label         string
	CapacityBytes int64
	// Chain is the disk's backing chain, the top (the file the VM or the
	// snapshot points at) first, the base last.
	Chain     []File
	Transport string
	// InstanceUUID is the VM's instance UUID (config.instanceUuid),
	// which names it across servers and re-registrations, as a moref
	// does not; a clone gets its own. "" when the server gives none.
	InstanceUUID string
	// resolvedAt is the server's clock before Resolve read the VM:
	// Recheck asks for the power-ons since (a VM read as it is that ran
	// and stopped again mid-read shows the same state after).
	resolvedAt time.Time
}

// File is one link of a backing chain.
type File struct {
	Path      string                       // "[datastore1] vm/vm-000001.vmdk"
	Datastore types.ManagedObjectReference // its datastore
	// URL is its /folder URL on the SDK's host (transport datastore).
	URL *url.URL
}

// Result is what the import read, for its result.
func (d *Disk) Result() *jobapi.VSphereResult {
	r := &jobapi.VSphereResult{VMName: d.VMName, InstanceUUID: d.InstanceUUID, DiskLabel: d.Label, DiskKey: d.Device.Key, CapacityBytes: d.CapacityBytes, Transport: d.Transport}
	for _, f := range d.Chain {
		r.BackingFiles = append(r.BackingFiles, f.Path)
	}
	if d.Snapshot != nil {
		r.Snapshot = d.SnapshotName + " (" + d.Snapshot.Value + ")"
	}
	return r
}

// vmProps are the VM's properties Resolve reads.
var vmProps = []string{"name", "config.hardware.device", "config.instanceUuid", "runtime.powerState", "snapshot", "datastore"}

// Resolve finds the disk s names on c's server and its backing chain.
// A powered-off or suspended VM (nothing writes its disks while it is
// suspended) is read as it is; a running one only as of a snapshot, whose
// chain the VM no longer writes.
func Resolve(ctx context.Context, c *Client, s Selector) (*Disk, error) {
	switch s.Transport {
	case "":
		s.Transport = jobapi.TransportDatastore
	case jobapi.TransportDatastore, jobapi.TransportNFC:
	default:
		return nil, tag(ErrInvalidOptions, "--vsphere-transport %q: want %s or %s", s.Transport, jobapi.TransportDatastore, jobapi.TransportNFC)
	}
	ref, err := findVM(ctx, c, s)
	if err != nil {
		return nil, err
	}
	// The server's clock, not ours: the events Recheck asks for carry
	// its times.
	since, err := methods.GetCurrentTime(ctx, c.Vim)
	if err != nil {
		return nil, sdkError(err, "the server's time")
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Vim).RetrieveOne(ctx, ref, vmProps, &vm); err != nil {
		return nil, sdkError(err, "VM %s", ref.Value)
	}
	if vm.Config == nil {
		return nil, tag(ErrTransient, "VM %s (%s) has no configuration: vSphere cannot read its files now (an inaccessible datastore, an orphaned VM)", vm.Name, ref.Value)
	}
	d := &Disk{VM: ref, VMName: vm.Name, InstanceUUID: vm.Config.InstanceUuid, PowerState: vm.Runtime.PowerState, Transport: s.Transport, resolvedAt: *since}
	now, err := pickDisk(&vm, s)
	if err != nil {
		return nil, err
	}
	d.Device, d.Label = now, label(now)
	if s.Snapshot != "" {
		if err := d.atSnapshot(ctx, c, &vm, s.Snapshot); err != nil {
			return nil, err
		}
	}
	switch d.PowerState {
	case types.VirtualMachinePowerStatePoweredOff, types.VirtualMachinePowerStateSuspended:
	default: // poweredOn, or a state this version does not know
		if d.Snapshot == nil {
			return nil, tag(ErrInUse, "VM %s (%s) is %s: its disk is being written; name a snapshot in spec.source.vsphere.snapshot (--vsphere-snapshot) to import its frozen chain, or power the VM off", vm.Name, ref.Value, d.PowerState)
		}
	}
	d.CapacityBytes = d.Device.CapacityInBytes
	if d.CapacityBytes <= 0 && d.Device.CapacityInKB > 0 && d.Device.CapacityInKB <= math.MaxInt64/1024 {
		d.CapacityBytes = d.Device.CapacityInKB * 1024 // older hosts give only KB
	}
	if d.CapacityBytes <= 0 {
		return nil, tag(ErrChainBroken, "VM %s: %s has no capacity", vm.Name, d.Label)
	}
	if d.Chain, err = chainOf(ctx, c, d.Device, vm.Datastore, s.Transport); err != nil {
		return nil, fmt.Errorf("VM %s, %s: %w", vm.Name, d.Label, err)
	}
	if d.Snapshot != nil && d.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := frozen(d, now); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// frozen checks that no link of a snapshot's chain is the top the running
// VM writes now: the snapshot's files are the ones below it.
func frozen(d *Disk, now *types.VirtualDisk) error {
	top := fileName(now.Backing)
	for _, f := range d.Chain {
		if top != "" && f.Path == top {
			return tag(ErrInUse, "VM %s is %s and %s of snapshot %s is the file it writes now (%s): vSphere shows no delta above the snapshot; power the VM off, or take the snapshot again", d.VMName, d.PowerState, d.Label, d.SnapshotName, top)
		}
	}
	return nil
}

// findVM is the VM the selector names: exactly one.
func findVM(ctx context.Context, c *Client, s Selector) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	given := 0
	for _, v := range []string{s.UUID, s.InventoryPath, s.MoRef} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return none, tag(ErrInvalidOptions, "name the VM by exactly one of uuid, inventory path or moref (%d given)", given)
	}
	switch {
	case s.UUID != "":
		return vmByUUID(ctx, c, s.UUID)
	case s.InventoryPath != "":
		return vmByPath(ctx, c, s.InventoryPath)
	}
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: s.MoRef}
	if ref.FromString(s.MoRef) && ref.Type != "VirtualMachine" {
		return none, tag(ErrInvalidOptions, "moref %q is a %s, not a VirtualMachine", s.MoRef, ref.Type)
	}
	if ref.Value == "" || strings.ContainsAny(ref.Value, " :/") {
		return none, tag(ErrInvalidOptions, "moref %q: want a VM's moref, like vm-42", s.MoRef)
	}
	// It exists and is a VM: a moref of another type (host-12) fails
	// this with ManagedObjectNotFound or InvalidType.
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Vim).RetrieveOne(ctx, ref, []string{"name"}, &vm); err != nil {
		if fault.Is(err, &types.InvalidType{}) || fault.Is(err, &types.InvalidArgument{}) {
			return none, tag(ErrNotFound, "no VM with moref %s", ref.Value)
		}
		return none, sdkError(err, "VM %s", ref.Value)
	}
	return ref, nil
}

// vmByPath finds the VM at an inventory path, exactly: SearchIndex's
// FindByInventoryPath, not find.Finder, whose paths are glob patterns
// ("/DC/vm/db[1]" would find a VM named db1).
func vmByPath(ctx context.Context, c *Client, p string) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	if !strings.HasPrefix(p, "/") {
		return none, tag(ErrInvalidOptions, "inventory path %q: want the full path from the root, /datacenter/vm/folder/name", p)
	}
	r, err := object.NewSearchIndex(c.Vim).FindByInventoryPath(ctx, p)
	switch {
	case err != nil:
		return none, sdkError(err, "inventory path %q", p)
	case r == nil:
		return none, tag(ErrNotFound, "no VM at inventory path %q", p)
	case r.Reference().Type != "VirtualMachine":
		return none, tag(ErrNotFound, "inventory path %q is a %s, not a VM", p, r.Reference().Type)
	}
	return r.Reference(), nil
}

// vmByUUID finds the VM whose BIOS or instance UUID is uuid. Clones can
// share a BIOS UUID: more than one VM is refused, naming them.
func vmByUUID(ctx context.Context, c *Client, uuid string) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	si := object.NewSearchIndex(c.Vim)
	seen := map[types.ManagedObjectReference]bool{}
	var found []string
	for _, instance := range []bool{false, true} {
		refs, err := si.FindAllByUuid(ctx, nil, strings.ToLower(uuid), true, &instance)
		if err != nil {
			return none, sdkError(err, "VM with uuid %s", uuid)
		}
		for _, r := range refs {
			ref := r.Reference()
			if ref.Type == "VirtualMachine" && !seen[ref] {
				seen[ref] = true
				found = append(found, ref.Value)
			}
		}
	}
	switch len(found) {
	case 0:
		return none, tag(ErrNotFound, "no VM with BIOS or instance uuid %s", uuid)
	case 1:
		return types.ManagedObjectReference{Type: "VirtualMachine", Value: found[0]}, nil
	}
	return none, tag(ErrInvalidOptions, "uuid %s names %d VMs (%s): select the VM by its moref", uuid, len(found), listed(found))
}

// pickDisk is the VM's disk the selector names, as the VM is now.
func pickDisk(vm *mo.VirtualMachine, s Selector) (*types.VirtualDisk, error) {
	var disks []*types.VirtualDisk
	for _, dev := range vm.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok {
			disks = append(disks, d)
		}
	}
	labels := make([]string, len(disks))
	for i, d := range disks {
		labels[i] = fmt.Sprintf("%q", label(d))
	}
	if s.DiskLabel != "" {
		if s.DiskIndex != 0 {
			return nil, tag(ErrInvalidOptions, "give the disk's label or its index, not both")
		}
		var hit []*types.VirtualDisk
		for _, d := range disks {
			if label(d) == s.DiskLabel {
				hit = append(hit, d)
			}
		}
		switch len(hit) {
		case 0:
			return nil, tag(ErrNotFound, "VM %s has no disk labelled %q; its disks: %s", vm.Name, s.DiskLabel, listed(labels))
		case 1:
			return hit[0], nil
		}
		return nil, tag(ErrInvalidOptions, "VM %s has %d disks labelled %q: select it by index (its disks: %s)", vm.Name, len(hit), s.DiskLabel, listed(labels))
	}
	if s.DiskIndex < 0 || s.DiskIndex >= int64(len(disks)) {
		return nil, tag(ErrNotFound, "VM %s has no disk %d: it has %d (from 0: %s)", vm.Name, s.DiskIndex, len(disks), listed(labels))
	}
	return disks[s.DiskIndex], nil
}

func label(d *types.VirtualDisk) string {
	if info := d.DeviceInfo; info != nil {
		if desc := info.GetDescription(); desc != nil {
			return desc.Label
		}
	}
	return fmt.Sprintf("disk key %d", d.Key)
}

// maxListed bounds what a message lists (disks, snapshots, VMs).
const maxListed = 6

func listed(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > maxListed {
		return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(names)-maxListed)
	}
	return strings.Join(names, ", ")
}

// sdkError says what the SDK's refusal err of what (a call after the
// login) means: the package's one mapping of the SDK's faults, which
// sdkFault holds; any other fault, or none (the network), is transient.
func sdkError(err error, format string, a ...any) error {
	what := fmt.Sprintf(format, a...)
	if e := sdkFault(err, what); e != nil {
		return e
	}
	return tag(ErrTransient, "%s: %w", what, err)
}

// sdkFault is err tagged with what its fault means to every call after
// the login, or nil for a fault of no meaning here (a caller's own
// fallback then says what it means to it): the object gone (NotFound),
// a privilege the user lacks (Unauthorized, the same on every attempt),
// the session ended (transient: a new attempt logs in again).
func sdkFault(err error, what string) error {
	var np *types.NoPermission
	switch {
	case fault.Is(err, &types.ManagedObjectNotFound{}):
		return tag(ErrNotFound, "%s: not found (%v)", what, err)
	case fault.Is(err, &types.NoPermission{}):
		need := "read access to the VM and its datastores"
		if _, ok := fault.As(err, &np); ok && np != nil && np.PrivilegeId != "" {
			need = "the privilege " + np.PrivilegeId
		}
		return tag(ErrUnauthorized, "%s: %v: the user needs %s", what, err, need)
	case fault.Is(err, &types.NotAuthenticated{}):
		// After Connect's login took the credentials: the session
		// ended (expired, logged out elsewhere), which a new attempt's
		// login mends.
		return tag(ErrTransient, "%s: %v: the SDK session ended; a new attempt logs in again", what, err)
	}
	return nil
}
