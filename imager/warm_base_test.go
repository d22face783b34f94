package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// wantStamp fails unless the VMDK at path is stamped as disk 0 of vm at
// snap (nil: the VM as it is).
func wantStamp(t *testing.T, path, root string, vm vcenter.VM, snap *vcenter.Snapshot) {
	t.Helper()
	d, err := vmdk.Open(path, vmdk.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	disk, moref := vm.Disks[0], ""
	if snap != nil {
		disk, moref = snap.Disks[0], snap.MoRef
	}
	want := map[string]string{
		"ddb.vmdkpop.vsphere.vm":       vm.InstanceUUID,
		"ddb.vmdkpop.vsphere.disk":     strconv.Itoa(int(disk.Key)),
		"ddb.vmdkpop.vsphere.snapshot": moref,
		"ddb.vmdkpop.vsphere.top":      disk.Files[0],
	}
	for k, v := range want {
		if got := d.Descriptor().DDBValue(k); got != v || v == "" && k != "ddb.vmdkpop.vsphere.snapshot" {
			t.Fatalf("%s: %s = %q, want %q", path, k, got, v)
		}
	}
}

// A delta import takes as its base (-b) only the image of the same disk
// of the same VM imported at --vsphere-delta-from: the stamp every VMDK
// imported from vSphere carries (whatever its subformat or transport)
// says which that is. A disk of the right size that is another VM's (as
// clones of one template are), the same disk at another snapshot, a disk
// with no stamp or with one that differs in any part is refused before
// anything is written. A delta is stamped as its own point, so it is the
// base of the next delta.
func TestImportVSphereDeltaBaseStamp(t *testing.T) {
	f, flags := warmVCenter(t, false)
	off, on := f.VMs[0], f.VMs[1]
	s1, s2 := off.Snapshots[0], off.Snapshots[1]
	root := t.TempDir()
	dir := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	imported := func(name string, args ...string) (string, *jobapi.Result) {
		t.Helper()
		d := dir(name)
		code, r, _, errs := runImportTest(t, append(append([]string{"--target", d, "--target-format", "vmdk"}, flags...), args...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d %+v %s", name, code, r, errs)
		}
		return filepath.Join(d, "disk.vmdk"), r
	}

	// The base as the controllers import it (their command line), over
	// NFC; the others over the datastore, in other subformats.
	ctl := jobapi.ImportArgs{Target: dir("off-s1"), TargetFormat: "vmdk", Options: jobapi.VMDKOptions{Subformat: string(vmdk.MonolithicSparse)},
		CredentialsDir: flags[5], VSphere: &jobapi.VSphereArgs{URL: f.URL, Thumbprint: f.ThumbprintSHA256, MoRef: off.MoRef, Snapshot: s1.Name, Transport: jobapi.TransportNFC}}
	code, r, _, errs := runImportTest(t, ctl.Argv()[1:]...)
	if code != 0 {
		t.Fatalf("base: exit %d %+v %s", code, r, errs)
	}
	base := filepath.Join(ctl.Target, "disk.vmdk")
	wantStamp(t, base, root, off, &s1)
	if v := r.VSphere; v == nil || v.InstanceUUID != off.InstanceUUID || v.DiskKey != s1.Disks[0].Key {
		t.Fatalf("the result does not record the stamp: %+v", v)
	}
	otherVM, _ := imported("on-s1", "--vsphere-moref", on.MoRef, "--vsphere-snapshot", on.Snapshots[0].Name, "-o", "subformat=streamOptimized")
	wantStamp(t, otherVM, root, on, &on.Snapshots[0])
	otherSnap, _ := imported("off-s2", "--vsphere-moref", off.MoRef, "--vsphere-snapshot", s2.Name, "-o", "subformat=twoGbMaxExtentSparse")
	wantStamp(t, otherSnap, root, off, &s2)
	if on.Disks[0].Capacity != off.Disks[0].Capacity {
		t.Fatal("the two VMs' disks differ in size: the size alone would refuse the other's")
	}
	// Of the right size and unstamped, or stamped with one part wrong.
	forged := func(name string, change func(kv []vmdk.KeyValue)) string {
		kv := []vmdk.KeyValue{{Key: "ddb.vmdkpop.vsphere.vm", Value: off.InstanceUUID}, {Key: "ddb.vmdkpop.vsphere.disk", Value: strconv.Itoa(int(s1.Disks[0].Key))},
			{Key: "ddb.vmdkpop.vsphere.snapshot", Value: s1.MoRef}, {Key: "ddb.vmdkpop.vsphere.top", Value: s1.Disks[0].Files[0]}}
		change(kv)
		p := filepath.Join(dir(name), "disk.vmdk")
		if err := vmdk.Create(p, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: s1.Disks[0].Capacity, DDB: kv}}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	blank := forged("blank", func([]vmdk.KeyValue) {})
	if err := os.Remove(blank); err != nil {
		t.Fatal(err)
	}
	if err := vmdk.Create(blank, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: s1.Disks[0].Capacity}}); err != nil {
		t.Fatal(err)
	}
	partial := forged("partial", func(kv []vmdk.KeyValue) { kv[3].Key = "ddb.vmdkpop.other" })

	deltaDir := dir("delta")
	delta := func(b, since string, args ...string) (int, *jobapi.Result, string) {
		t.Helper()
		code, r, _, errs := runImportTest(t, append(append([]string{"--target", deltaDir, "--target-format", "vmdk", "--root", root, "-b", b, "--vsphere-moref", off.MoRef, "--vsphere-delta-from", since}, flags...), args...)...)
		return code, r, errs
	}
	for _, c := range []struct {
		name, base, msg string
	}{
		{"another VM's disk", otherVM, "VM " + on.InstanceUUID + ", not " + off.InstanceUUID},
		{"the disk at another snapshot", otherSnap, "snapshot " + s2.MoRef + ", not " + s1.MoRef},
		{"no stamp", blank, "has no vSphere provenance"},
		{"part of a stamp", partial, "has no vSphere provenance"},
		{"another VM", forged("vm", func(kv []vmdk.KeyValue) { kv[0].Value = on.InstanceUUID }), "VM " + on.InstanceUUID},
		{"another disk", forged("disk", func(kv []vmdk.KeyValue) { kv[1].Value = "2001" }), "disk key 2001, not " + strconv.Itoa(int(s1.Disks[0].Key))},
		{"another snapshot", forged("snapshot", func(kv []vmdk.KeyValue) { kv[2].Value = "snapshot-1" }), "snapshot snapshot-1, not"},
		{"another top file", forged("top", func(kv []vmdk.KeyValue) { kv[3].Value = s2.Disks[0].Files[0] }), "top file " + s2.Disks[0].Files[0] + ", not " + s1.Disks[0].Files[0]},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, r, _ := delta(c.base, s1.Name, "--vsphere-snapshot", s2.Name)
			wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
			if !strings.Contains(r.Message, c.msg) || !strings.Contains(r.Message, "the image of Hard disk 1 of VM "+off.Name+" at snapshot "+s1.Name+" ("+s1.MoRef+")") {
				t.Fatalf("message %q, want %q in it", r.Message, c.msg)
			}
			emptyDir(t, deltaDir)
		})
	}

	// The right base: the delta s1 -> s2, stamped s2; then the delta
	// s2 -> now over it (the base s1 refused for it).
	want2, err := s2.Disks[0].Bytes()
	if err != nil {
		t.Fatal(err)
	}
	code, r, errs = delta(base, s1.Name, "--vsphere-snapshot", s2.Name)
	if code != 0 {
		t.Fatalf("delta s1 -> s2: exit %d %+v %s", code, r, errs)
	}
	d2 := filepath.Join(dir("s2"), "disk.vmdk")
	if err := os.Rename(filepath.Join(deltaDir, "disk.vmdk"), d2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vmdkContent(t, d2, root), want2) {
		t.Fatal("the delta s1 -> s2 over the base is not the disk at s2")
	}
	wantStamp(t, d2, root, off, &s2)
	code, r, _ = delta(base, s2.Name)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if !strings.Contains(r.Message, "snapshot "+s1.MoRef+", not "+s2.MoRef) {
		t.Fatalf("the base s1 as the delta s2 -> now's: %q", r.Message)
	}
	emptyDir(t, deltaDir)
	code, r, errs = delta(d2, s2.Name)
	if code != 0 {
		t.Fatalf("delta s2 -> now: exit %d %+v %s", code, r, errs)
	}
	wantNow, err := off.Disks[0].Bytes()
	if err != nil {
		t.Fatal(err)
	}
	now := filepath.Join(deltaDir, "disk.vmdk")
	if !bytes.Equal(vmdkContent(t, now, root), wantNow) {
		t.Fatal("the delta s2 -> now over the delta s1 -> s2 is not the disk now")
	}
	wantStamp(t, now, root, off, nil)
}

// What the server names a disk by is untrusted: a name too long for a
// descriptor, or holding a line break, is stamped as its hash, so the
// stamp is always one vmdk writes and reads back as it was made.
func TestVSphereStampBounded(t *testing.T) {
	snap := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: "snapshot-\n12"}
	d := &vsphere.Disk{VM: types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-7"}, InstanceUUID: strings.Repeat("u", 5000),
		Device: &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: 2000}}, Snapshot: &snap,
		Chain: []vsphere.File{{Path: "[datastore1] vm/vm-000001.vmdk\r\nRW 1 FLAT \"x\" 0"}, {Path: "[datastore1] vm/vm.vmdk"}}}
	s := stampOf(d)
	for _, v := range []string{s.vm, s.snapshot, s.top} {
		if !strings.HasPrefix(v, "sha256:") || len(v) != len("sha256:")+64 {
			t.Fatalf("%.80q is not a hash", v)
		}
	}
	if s.disk != "2000" || s.top == stampOf(&vsphere.Disk{VM: d.VM, Device: d.Device, Chain: d.Chain[1:]}).top {
		t.Fatalf("stamp %+v", s)
	}
	p := filepath.Join(t.TempDir(), "disk.vmdk")
	if err := vmdk.Create(p, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: 1 << 20, DDB: s.ddb()}}); err != nil {
		t.Fatal(err)
	}
	img, err := vmdk.Open(p, vmdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got, ok := readStamp(img.Descriptor()); !ok || got != s || len(img.Extents()) != 1 {
		t.Fatalf("read back %+v (%v), want %+v", got, ok, s)
	}
	// Short, printable names are kept as they are, for people to read.
	if v := stampValue("[datastore 1] vm/ünï \"q\".vmdk"); v != "[datastore 1] vm/ünï \"q\".vmdk" {
		t.Fatalf("%q", v)
	}
	// A server with no instance UUID: the VM's moref.
	if v := stampOf(&vsphere.Disk{VM: d.VM, Device: d.Device}).vm; v != "moref vm-7" {
		t.Fatalf("%q", v)
	}
}
