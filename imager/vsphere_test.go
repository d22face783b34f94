package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// `imager import --vsphere-*` against a simulated vCenter or ESXi host
// whose VMs' disks are real ESXi chains: each import is byte for byte the
// disk the fixture built, as of the snapshot named.

func startVSphereFixture(t *testing.T, o vcenter.Options) (*vcenter.Fixture, string) {
	t.Helper()
	f, err := vcenter.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, vsphereCreds(t, f.Username, f.Password)
}

func vsphereCreds(t *testing.T, user, pass string) string {
	t.Helper()
	d := t.TempDir()
	for name, v := range map[string]string{"username": user, "password": pass} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// vsphereImport runs import with the fixture's URL and credentials and
// the flags given.
func vsphereImport(t *testing.T, f *vcenter.Fixture, creds string, flags ...string) (int, *jobapi.Result, string, string) {
	t.Helper()
	target := t.TempDir()
	args := append([]string{"--target", target, "--retries", "0", "--vsphere-url", f.URL, "--credentials-dir", creds}, flags...)
	code, r, _, errs := runImportTest(t, args...)
	return code, r, filepath.Join(target, "disk.img"), errs
}

func wantDisk(t *testing.T, what string, code int, r *jobapi.Result, errs, out string, want vcenter.Disk, vm, snapshot string) {
	t.Helper()
	if code != 0 || r.Phase != jobapi.Succeeded {
		t.Fatalf("%s: exit %d, result %+v, stderr %s", what, code, r, errs)
	}
	if got := fileSHA256(t, out); got != want.SHA256 {
		t.Fatalf("%s: imported sha256 %s, the disk's is %s", what, got, want.SHA256)
	}
	v := r.VSphere
	if v == nil || v.VMName != vm || v.DiskLabel != want.Label || v.CapacityBytes != want.Capacity || !slices.Equal(v.BackingFiles, want.Files) ||
		v.Snapshot != snapshot || v.Transport != jobapi.TransportDatastore {
		t.Fatalf("%s: result's vsphere %+v, want %s %s %v at %q", what, v, vm, want.Label, want.Files, snapshot)
	}
	if r.VirtualSize != want.Capacity {
		t.Fatalf("%s: virtual size %d, want %d", what, r.VirtualSize, want.Capacity)
	}
}

func TestImportVSphere(t *testing.T) {
	for _, o := range []vcenter.Options{{Seed: 51}, {ESX: true, VMFSSparse: true, Seed: 52}} {
		name := "vCenter, seSparse"
		if o.ESX {
			name = "ESXi, vmfsSparse"
		}
		t.Run(name, func(t *testing.T) {
			f, creds := startVSphereFixture(t, o)
			off, on := f.VMs[0], f.VMs[1]
			at := func(vm vcenter.VM, k int) string { return vm.Snapshots[k].Name + " (" + vm.Snapshots[k].MoRef + ")" }
			for _, tc := range []struct {
				what     string
				flags    []string
				vm       vcenter.VM
				disk     vcenter.Disk
				snapshot string
			}{
				{"off, by BIOS uuid, now", []string{"--vsphere-uuid", off.UUID, "--vsphere-thumbprint", f.ThumbprintSHA256}, off, off.Disks[0], ""},
				{"off, by instance uuid, s1", []string{"--vsphere-uuid", off.InstanceUUID, "--vsphere-snapshot", "s1", "--vsphere-thumbprint", f.ThumbprintSHA1}, off, off.Snapshots[0].Disks[0], at(off, 0)},
				{"off, by path, Hard disk 2 at s2", []string{"--vsphere-path", off.InventoryPath, "--vsphere-disk-label", "Hard disk 2", "--vsphere-snapshot", "s2", "--vsphere-thumbprint", strings.ToLower(strings.ReplaceAll(f.ThumbprintSHA256, ":", ""))}, off, off.Snapshots[1].Disks[1], at(off, 1)},
				{"running, by moref, s2 by moref", []string{"--vsphere-moref", on.MoRef, "--vsphere-snapshot", on.Snapshots[1].MoRef, "--vsphere-thumbprint", f.ThumbprintSHA1}, on, on.Snapshots[1].Disks[0], at(on, 1)},
				{"running, by path, disk 1 at s1, CA file", []string{"--vsphere-path", on.InventoryPath, "--vsphere-disk-index", "1", "--vsphere-snapshot", "s1", "--ca-file", caFile(t, f)}, on, on.Snapshots[0].Disks[1], at(on, 0)},
			} {
				code, r, out, errs := vsphereImport(t, f, creds, tc.flags...)
				wantDisk(t, tc.what, code, r, errs, out, tc.disk, tc.vm.Name, tc.snapshot)
			}
		})
	}
}

func caFile(t *testing.T, f *vcenter.Fixture) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, f.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each failure has its reason, its permanence, and a message that says
// what to do.
func TestImportVSphereFailures(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 53})
	off, on := f.VMs[0], f.VMs[1]
	pin := []string{"--vsphere-thumbprint", f.ThumbprintSHA256}
	wrong := []byte(strings.ReplaceAll(f.ThumbprintSHA256, ":", ""))
	if wrong[0] == '0' {
		wrong[0] = '1'
	} else {
		wrong[0] = '0'
	}
	for _, tc := range []struct {
		what   string
		creds  string
		flags  []string
		code   int
		reason string
		msg    []string
	}{
		{"wrong password", vsphereCreds(t, f.Username, "nope"), append([]string{"--vsphere-moref", off.MoRef}, pin...), jobapi.ExitPermanent, jobapi.ReasonUnauthorized, []string{"user name or password is wrong"}},
		{"wrong thumbprint", creds, []string{"--vsphere-moref", off.MoRef, "--vsphere-thumbprint", string(wrong)}, jobapi.ExitPermanent, jobapi.ReasonSourceError, []string{f.ThumbprintSHA1, f.ThumbprintSHA256}},
		{"no trust given", creds, []string{"--vsphere-moref", off.MoRef}, jobapi.ExitPermanent, jobapi.ReasonSourceError, []string{f.ThumbprintSHA256}},
		{"running, no snapshot", creds, append([]string{"--vsphere-moref", on.MoRef}, pin...), jobapi.ExitTransient, jobapi.ReasonSourceInUse, []string{"spec.source.vsphere.snapshot", "power the VM off"}},
		{"unknown VM", creds, append([]string{"--vsphere-moref", "vm-99999"}, pin...), jobapi.ExitPermanent, jobapi.ReasonSourceNotFound, []string{"vm-99999"}},
		{"unknown disk", creds, append([]string{"--vsphere-moref", off.MoRef, "--vsphere-disk-label", "Hard disk 9"}, pin...), jobapi.ExitPermanent, jobapi.ReasonSourceNotFound, []string{`"Hard disk 1", "Hard disk 2"`}},
		{"unknown snapshot", creds, append([]string{"--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s9"}, pin...), jobapi.ExitPermanent, jobapi.ReasonSourceNotFound, []string{`"s1"`, `"s2"`}},
	} {
		code, r, out, _ := vsphereImport(t, f, tc.creds, tc.flags...)
		wantFailed(t, code, r, tc.code, tc.reason)
		for _, m := range tc.msg {
			if !strings.Contains(r.Message, m) {
				t.Fatalf("%s: message %q, want %q in it", tc.what, r.Message, m)
			}
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: left %s", tc.what, out)
		}
	}

	// A descriptor that links another parent than vSphere names: a copy
	// of the parent's descriptor, so the chain itself reads (same CID,
	// same extent), but is not the files vSphere describes.
	top := f.LocalPath(off.Disks[0].Files[0])
	text, err := os.ReadFile(top)
	if err != nil {
		t.Fatal(err)
	}
	parent := f.LocalPath(off.Disks[0].Files[1])
	ptext, err := os.ReadFile(parent)
	if err != nil {
		t.Fatal(err)
	}
	imposter := filepath.Join(filepath.Dir(parent), "imposter.vmdk")
	if err := os.WriteFile(imposter, ptext, 0o644); err != nil {
		t.Fatal(err)
	}
	relinked := strings.Replace(string(text), `parentFileNameHint="`+filepath.Base(parent)+`"`, `parentFileNameHint="imposter.vmdk"`, 1)
	if relinked == string(text) {
		t.Fatal("no parentFileNameHint to relink")
	}
	if err := os.WriteFile(top, []byte(relinked), 0o644); err != nil {
		t.Fatal(err)
	}
	code, r, _, _ := vsphereImport(t, f, creds, append([]string{"--vsphere-moref", off.MoRef}, pin...)...)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonChainBroken)
	if !strings.Contains(r.Message, "imposter.vmdk") || !strings.Contains(r.Message, "not the disk vSphere describes") {
		t.Fatalf("relinked chain: message %q", r.Message)
	}
	if err := os.WriteFile(top, text, 0o644); err != nil {
		t.Fatal(err)
	}

	// A file of the chain gone from the datastore.
	missing := off.Snapshots[1].Disks[0].DataFiles[1]
	if err := os.Remove(f.LocalPath(missing)); err != nil {
		t.Fatal(err)
	}
	code, r, _, _ = vsphereImport(t, f, creds, append([]string{"--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2"}, pin...)...)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceNotFound)
	if !strings.Contains(r.Message, filepath.Base(f.LocalPath(missing))) {
		t.Fatalf("missing file: message %q", r.Message)
	}
}

// A raw device mapping says which transport serves it: none, for a
// physical-mode RDM (its bytes are the LUN's).
func TestImportVSphereRDM(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 54, Size: 1<<20 + 4096})
	ctx := context.Background()
	c, err := vsphere.Connect(ctx, vsphere.Options{URL: f.URL, Thumbprint: f.ThumbprintSHA256, HTTP: source.HTTPOptions{CredsDir: creds}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	off := f.VMs[0]
	vm := object.NewVirtualMachine(c.Vim, types.ManagedObjectReference{Type: "VirtualMachine", Value: off.MoRef})
	devices, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var disk *types.VirtualDisk
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		if d.GetVirtualDevice().DeviceInfo.GetDescription().Label == "Hard disk 2" {
			disk = d.(*types.VirtualDisk)
		}
	}
	if disk == nil {
		t.Fatal("no Hard disk 2")
	}
	flat := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	rdm := &types.VirtualDiskRawDiskMappingVer1BackingInfo{CompatibilityMode: string(types.VirtualDiskCompatibilityModePhysicalMode), LunUuid: "0200000000600508b1001c"}
	rdm.FileName, rdm.Datastore = flat.FileName, flat.Datastore
	disk.Backing = rdm
	if err := vm.EditDevice(ctx, disk); err != nil {
		t.Fatal(err)
	}
	code, r, _, _ := vsphereImport(t, f, creds, "--vsphere-moref", off.MoRef, "--vsphere-disk-label", "Hard disk 2", "--vsphere-thumbprint", f.ThumbprintSHA256)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnsupportedImage)
	if !strings.Contains(r.Message, "physical mode") || !strings.Contains(r.Message, "copy the LUN") {
		t.Fatalf("message %q", r.Message)
	}
}

// A snapshot deleted while its disk was read (its delta merged into the
// parent): the copy is not the disk at one moment, and the import fails
// so that a new attempt reads it whole again.
func TestImportVSphereSnapshotDeletedWhileRead(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 55, Size: 1<<20 + 4096})
	on := f.VMs[1]
	defer func(h func(context.Context, *vsphere.Client, *vsphere.Disk)) { vsphereCopied = h }(vsphereCopied)
	vsphereCopied = func(ctx context.Context, c *vsphere.Client, d *vsphere.Disk) {
		vm := object.NewVirtualMachine(c.Vim, d.VM)
		task, err := vm.RemoveSnapshot(ctx, d.Snapshot.Value, false, nil)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Error(err)
		}
	}
	code, r, out, _ := vsphereImport(t, f, creds, "--vsphere-moref", on.MoRef, "--vsphere-snapshot", "s1", "--vsphere-thumbprint", f.ThumbprintSHA256)
	wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceInUse)
	if !strings.Contains(r.Message, "is gone after the import") {
		t.Fatalf("message %q", r.Message)
	}
	emptyDir(t, filepath.Dir(out))
}
