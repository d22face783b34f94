package vcenter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// secondDiskSize is "Hard disk 2"'s size: small, and not a whole number
// of grain tables either.
const secondDiskSize = 1<<20 + 8192

type vmSpec struct {
	name       string
	running    bool
	size       int64
	deltas     int
	vmfsSparse bool
	seed       uint64
}

// chainDisk is one disk's chain as written locally: what it must read as
// at each point (0: the base alone, k: the base under k deltas).
type chainDisk struct {
	label string
	chain *vmdktest.Chain
	base  []byte // the base's content, held so the model reads fast
}

// model is the disk as of point k (the base under its first k deltas).
func (c *chainDisk) model(k int) *vmdktest.Model {
	m := c.chain.Model
	return &vmdktest.Model{Size: m.Size, Base: bytes.NewReader(c.base), BaseSize: m.BaseSize, Layers: m.Layers[:k]}
}

// names are the local file names of point k's chain, top first: each
// link's descriptor, then its extent.
func (c *chainDisk) names(k int) []string {
	var out []string
	for i := k; i >= 0; i-- {
		out = append(out, filepath.Base(c.chain.Files[2*i]), filepath.Base(c.chain.Files[2*i+1]))
	}
	return out
}

func writeChain(dir, name, label string, size int64, o vmdktest.ChainOptions) (*chainDisk, error) {
	c, err := vmdktest.WriteESXiChain(dir, name, size, o)
	if err != nil {
		return nil, fmt.Errorf("%s: write the chain: %w", label, err)
	}
	if len(c.Files) != 2*(o.Deltas+1) {
		return nil, fmt.Errorf("%s: the chain has %d files, want a descriptor and an extent for each of %d links: %w", label, len(c.Files), o.Deltas+1, ErrSetup)
	}
	base := make([]byte, size)
	if _, err := c.Model.Base.ReadAt(base, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s: base content: %w", label, err)
	}
	return &chainDisk{label: label, chain: c, base: base}, nil
}

func (f *Fixture) buildVM(ctx context.Context, inv *inventory, s vmSpec) (*VM, error) {
	local, err := os.MkdirTemp("", "vcenter-"+s.name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(local)
	var disks []*chainDisk
	for i, d := range []struct {
		file string
		size int64
	}{{s.name, s.size}, {s.name + "_1", secondDiskSize}} { // ESXi names a VM's second disk <vm>_1.vmdk
		c, err := writeChain(local, d.file, fmt.Sprintf("Hard disk %d", i+1), d.size,
			vmdktest.ChainOptions{Deltas: s.deltas, Seed: s.seed + uint64(i), VMFSSparse: s.vmfsSparse})
		if err != nil {
			return nil, err
		}
		disks = append(disks, c)
	}

	vm, dir, err := f.createVM(ctx, inv, s.name)
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		for _, file := range d.chain.Files {
			if err := f.upload(ctx, file, path.Join(dir, filepath.Base(file))); err != nil {
				return nil, err
			}
		}
	}

	// Point the disks at their bases, then snapshot and move each disk to
	// its next delta, as ESXi does when it takes a snapshot.
	if err := f.attachBases(ctx, vm, dir, disks); err != nil {
		return nil, err
	}
	var snaps []types.ManagedObjectReference
	for k := 1; k <= s.deltas; k++ {
		task, err := vm.CreateSnapshot(ctx, fmt.Sprintf("s%d", k), "", false, false)
		if err != nil {
			return nil, fmt.Errorf("snapshot s%d: %w", k, err)
		}
		info, err := task.WaitForResult(ctx)
		if err != nil {
			return nil, fmt.Errorf("snapshot s%d: %w", k, err)
		}
		ref, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return nil, fmt.Errorf("snapshot s%d: the task returned %T, not a snapshot: %w", k, info.Result, ErrSetup)
		}
		snaps = append(snaps, ref)
		if err := f.moveToDelta(ctx, vm, dir, disks, k); err != nil {
			return nil, err
		}
	}
	if s.running {
		task, err := vm.PowerOn(ctx)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("power on: %w", err)
		}
	}
	// A running VM writes its disks' top links: /folder refuses them
	// while the VM is on (now, or once powered on).
	for _, d := range disks {
		for _, name := range d.names(s.deltas)[:2] {
			f.folder.holds(path.Join(dir, name), vm.Reference())
		}
	}
	return f.readBack(ctx, vm, dir, s, disks, snaps)
}

func (f *Fixture) createVM(ctx context.Context, inv *inventory, name string) (*object.VirtualMachine, string, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, "", err
	}
	spec := types.VirtualMachineConfigSpec{
		Name:     name,
		GuestId:  string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
		NumCPUs:  1,
		MemoryMB: 64,
		Files:    &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", f.Datastore)},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: scsi,
		}},
	}
	task, err := inv.folder.CreateVM(ctx, spec, inv.pool, inv.host)
	if err != nil {
		return nil, "", fmt.Errorf("create: %w", err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("create: %w", err)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, "", fmt.Errorf("create: the task returned %T, not a VM: %w", info.Result, ErrSetup)
	}
	vm := object.NewVirtualMachine(f.admin.Client, ref)
	var mvm mo.VirtualMachine
	if err := vm.Properties(ctx, ref, []string{"config.files"}, &mvm); err != nil {
		return nil, "", err
	}
	var vmx object.DatastorePath
	if !vmx.FromString(mvm.Config.Files.VmPathName) || vmx.Datastore != f.Datastore {
		return nil, "", fmt.Errorf("create: the VM's files are at %q, not on %s: %w", mvm.Config.Files.VmPathName, f.Datastore, ErrSetup)
	}
	return vm, path.Dir(vmx.Path), nil
}

// upload PUTs a local file to the datastore through /folder, as a user
// uploading a disk would.
func (f *Fixture) upload(ctx context.Context, local, name string) error {
	file, err := os.Open(local)
	if err != nil {
		return err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, f.FolderURL(f.DatastorePath(name)), file)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.SetBasicAuth(f.Username, f.Password)
	resp, err := f.HTTPClient().Do(req)
	if err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upload %s: %s: %w", name, resp.Status, ErrSetup)
	}
	// vcsim answers before it has closed the file: check what landed.
	if got, err := os.Stat(f.LocalPath(f.DatastorePath(name))); err != nil || got.Size() != st.Size() {
		return fmt.Errorf("upload %s: the datastore holds %v (%v), want %d bytes: %w", name, got, err, st.Size(), ErrSetup)
	}
	return nil
}

func (f *Fixture) attachBases(ctx context.Context, vm *object.VirtualMachine, dir string, disks []*chainDisk) error {
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	ctrl, err := devices.FindDiskController("scsi")
	if err != nil {
		return fmt.Errorf("the VM's SCSI controller: %w", err)
	}
	var change []types.BaseVirtualDeviceConfigSpec
	for i, d := range disks {
		unit := int32(i)
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(-1 - i),
				ControllerKey: ctrl.GetVirtualController().Key,
				UnitNumber:    &unit,
				DeviceInfo:    &types.Description{Label: d.label, Summary: d.label},
				Backing:       f.backing(dir, d, 0),
			},
			CapacityInBytes: d.chain.Model.Size,
			CapacityInKB:    d.chain.Model.Size / 1024,
		}
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk})
	}
	return reconfigure(ctx, vm, change, "attach the base disks")
}

func (f *Fixture) moveToDelta(ctx context.Context, vm *object.VirtualMachine, dir string, disks []*chainDisk, k int) error {
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	var change []types.BaseVirtualDeviceConfigSpec
	for _, d := range disks {
		disk := diskByLabel(devices, d.label)
		if disk == nil {
			return fmt.Errorf("%s: not on the VM before delta %d: %w", d.label, k, ErrSetup)
		}
		disk.Backing = f.backing(dir, d, k)
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: disk})
	}
	return reconfigure(ctx, vm, change, fmt.Sprintf("move the disks to delta %d", k))
}

// diskByLabel finds a disk by its label ("Hard disk 1"), which
// VirtualDeviceList.Find does not: it goes by vcsim's own device names.
func diskByLabel(devices object.VirtualDeviceList, label string) *types.VirtualDisk {
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		if info := d.GetVirtualDevice().DeviceInfo; info != nil && info.GetDescription().Label == label {
			return d.(*types.VirtualDisk)
		}
	}
	return nil
}

func reconfigure(ctx context.Context, vm *object.VirtualMachine, change []types.BaseVirtualDeviceConfigSpec, what string) error {
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: change})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// backing is the backing of point k's chain as ESXi reports a snapshotted
// disk: every link a FlatVer2 backing, the deltas marked by their
// deltaDiskFormat (seSparseFormat, or redoLogFormat for vmfsSparse), each
// the Parent of the one above.
func (f *Fixture) backing(dir string, d *chainDisk, k int) *types.VirtualDiskFlatVer2BackingInfo {
	var b *types.VirtualDiskFlatVer2BackingInfo
	for i := 0; i <= k; i++ {
		link := &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
				FileName: f.DatastorePath(path.Join(dir, filepath.Base(d.chain.Files[2*i]))),
			},
			DiskMode: string(types.VirtualDiskModePersistent),
			Parent:   b,
		}
		switch ext := filepath.Base(d.chain.Files[2*i+1]); {
		case i == 0:
			link.ThinProvisioned = types.NewBool(true)
		case strings.HasSuffix(ext, "-delta.vmdk"): // vmdktest's vmfsSparse extent
			link.DeltaDiskFormat = string(types.VirtualDiskDeltaDiskFormatRedoLogFormat)
			link.DeltaDiskFormatVariant = "vmfsSparseVariant"
		default:
			link.DeltaDiskFormat = string(types.VirtualDiskDeltaDiskFormatSeSparseFormat)
			link.DeltaGrainSize = vmdktest.GrainSize / 1024 // KiB
		}
		b = link
	}
	return b
}

// readBack builds the VM's description from what vcsim holds, and checks
// it against what was set: every backing chain, now and at each snapshot.
func (f *Fixture) readBack(ctx context.Context, vm *object.VirtualMachine, dir string, s vmSpec, disks []*chainDisk, snaps []types.ManagedObjectReference) (*VM, error) {
	var mvm mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"name", "config", "snapshot", "runtime.powerState"}, &mvm); err != nil {
		return nil, err
	}
	running := mvm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	if running != s.running {
		return nil, fmt.Errorf("power state %s: %w", mvm.Runtime.PowerState, ErrSetup)
	}
	out := &VM{
		Name: mvm.Name, UUID: mvm.Config.Uuid, InstanceUUID: mvm.Config.InstanceUuid, MoRef: vm.Reference().Value,
		InventoryPath: path.Join("/", f.Datacenter, "vm", mvm.Name), Running: running, Dir: dir,
	}
	if out.UUID == "" || out.InstanceUUID == "" {
		return nil, fmt.Errorf("the VM has no UUID (%q) or instance UUID (%q): %w", out.UUID, out.InstanceUUID, ErrSetup)
	}
	var err error
	if out.Disks, err = f.checkDisks(mvm.Config.Hardware.Device, dir, disks, s.deltas); err != nil {
		return nil, fmt.Errorf("now: %w", err)
	}
	tree := snapshotList(mvm.Snapshot)
	if len(tree) != len(snaps) {
		return nil, fmt.Errorf("%d snapshots in the VM's tree, %d taken: %w", len(tree), len(snaps), ErrSetup)
	}
	for k, ref := range snaps {
		if tree[k].Snapshot != ref || tree[k].Name != fmt.Sprintf("s%d", k+1) {
			return nil, fmt.Errorf("snapshot %d in the tree is %s (%s), want s%d (%s): %w", k+1, tree[k].Name, tree[k].Snapshot.Value, k+1, ref.Value, ErrSetup)
		}
		var ms mo.VirtualMachineSnapshot
		if err := vm.Properties(ctx, ref, []string{"config.hardware.device"}, &ms); err != nil {
			return nil, fmt.Errorf("snapshot s%d: %w", k+1, err)
		}
		// Snapshot s(k+1) froze the chain as it was: the base under k deltas.
		sd, err := f.checkDisks(ms.Config.Hardware.Device, dir, disks, k)
		if err != nil {
			return nil, fmt.Errorf("snapshot s%d: %w", k+1, err)
		}
		out.Snapshots = append(out.Snapshots, Snapshot{Name: tree[k].Name, MoRef: ref.Value, Disks: sd})
	}
	return out, nil
}

// snapshotList flattens the VM's snapshot tree, which the fixture builds
// as a line (each snapshot the only child of the one before).
func snapshotList(info *types.VirtualMachineSnapshotInfo) []types.VirtualMachineSnapshotTree {
	if info == nil {
		return nil
	}
	var out []types.VirtualMachineSnapshotTree
	for level := info.RootSnapshotList; len(level) > 0; level = level[0].ChildSnapshotList {
		if len(level) != 1 {
			return nil // not a line: the caller's count check fails
		}
		out = append(out, level[0])
	}
	return out
}

// checkDisks reads the disks of a device list and checks each is the
// chain of point k, link by link.
func (f *Fixture) checkDisks(devices []types.BaseVirtualDevice, dir string, disks []*chainDisk, k int) ([]Disk, error) {
	got := object.VirtualDeviceList(devices).SelectByType((*types.VirtualDisk)(nil))
	if len(got) != len(disks) {
		return nil, fmt.Errorf("%d disks, want %d: %w", len(got), len(disks), ErrSetup)
	}
	var out []Disk
	for i, d := range disks {
		vd := got[i].(*types.VirtualDisk)
		if label := vd.DeviceInfo.GetDescription().Label; label != d.label {
			return nil, fmt.Errorf("disk %d is %q, want %q: %w", i, label, d.label, ErrSetup)
		}
		if vd.CapacityInBytes != d.chain.Model.Size {
			return nil, fmt.Errorf("%s: capacity %d, want %d: %w", d.label, vd.CapacityInBytes, d.chain.Model.Size, ErrSetup)
		}
		want := f.backing(dir, d, k)
		var files []string
		b, _ := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		for w := want; w != nil || b != nil; w, b = w.Parent, b.Parent {
			if w == nil || b == nil || b.FileName != w.FileName || b.DeltaDiskFormat != w.DeltaDiskFormat {
				return nil, fmt.Errorf("%s: backing chain %v, want %v: %w", d.label, chainNames(vd.Backing), chainNames(f.backing(dir, d, k)), ErrSetup)
			}
			files = append(files, b.FileName)
		}
		var data []string
		for _, name := range d.names(k) {
			data = append(data, f.DatastorePath(path.Join(dir, name)))
		}
		m := d.model(k)
		sum := sha256.New()
		if _, err := m.WriteTo(sum); err != nil {
			return nil, fmt.Errorf("%s: model: %w", d.label, err)
		}
		out = append(out, Disk{
			Label: d.label, Key: vd.Key, Files: files, DataFiles: data, Capacity: m.Size,
			SHA256: hex.EncodeToString(sum.Sum(nil)), Content: m,
		})
	}
	return out, nil
}

// chainNames lists a backing chain's file names, top first, for messages.
func chainNames(b types.BaseVirtualDeviceBackingInfo) []string {
	var out []string
	for fb, ok := b.(*types.VirtualDiskFlatVer2BackingInfo); ok && fb != nil; fb = fb.Parent {
		out = append(out, fb.FileName+" "+fb.DeltaDiskFormat)
	}
	if len(out) == 0 && b != nil {
		out = append(out, fmt.Sprintf("%T", b))
	}
	return out
}
