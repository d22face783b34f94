package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// A VM read as it is that runs while its disk is read: the import fails
// SourceInUse (transient: a new attempt reads it whole again), and leaves
// no disk.

// setVSphereCopied runs h between the copy and its recheck, for this test.
func setVSphereCopied(t *testing.T, h func(context.Context, *vsphere.Client, *vsphere.Disk)) {
	old := vsphereCopied
	t.Cleanup(func() { vsphereCopied = old })
	vsphereCopied = h
}

// powerVM powers the VM on (or off) and waits for it.
func powerVM(ctx context.Context, t *testing.T, c *vsphere.Client, d *vsphere.Disk, on bool) {
	t.Helper()
	vm := object.NewVirtualMachine(c.Vim, d.VM)
	task, err := vm.PowerOff(ctx)
	if on {
		task, err = vm.PowerOn(ctx)
	}
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Error(err)
	}
}

// Powered on and off again: the same power state and files after, but
// its guest may have written blocks already copied.
func TestImportVSpherePowerCycledWhileRead(t *testing.T) {
	for _, esx := range []bool{false, true} {
		f, creds := startVSphereFixture(t, vcenter.Options{ESX: esx, Seed: 56, Size: 1<<20 + 4096, Deltas: 1})
		setVSphereCopied(t, func(ctx context.Context, c *vsphere.Client, d *vsphere.Disk) {
			powerVM(ctx, t, c, d, true)
			powerVM(ctx, t, c, d, false)
		})
		code, r, out, _ := vsphereImport(t, f, creds, "--vsphere-moref", f.VMs[0].MoRef, "--vsphere-thumbprint", f.ThumbprintSHA256)
		wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceInUse)
		if !strings.Contains(r.Message, "ran while Hard disk 1 was read") {
			t.Fatalf("ESX %v: message %q", esx, r.Message)
		}
		emptyDir(t, filepath.Dir(out))
	}
}
