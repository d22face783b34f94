package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A delta whose later snapshot is deleted while it is read (its links
// consolidated: what was read is no change between two points): the
// import fails SourceInUse, as a whole import does, and leaves no delta
// at its final name nor names one in its result.
func TestImportVSphereDeltaSnapshotDeletedWhileRead(t *testing.T) {
	f, flags := warmVCenter(t, false)
	on := f.VMs[1]
	root := t.TempDir()
	baseDir, deltaDir := filepath.Join(root, "s1"), filepath.Join(root, "s2")
	for _, d := range []string{baseDir, deltaDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	code, base, _, errs := runImportTest(t, append([]string{"--target", baseDir, "--target-format", "vmdk", "--vsphere-moref", on.MoRef, "--vsphere-snapshot", "s1"}, flags...)...)
	if code != 0 {
		t.Fatalf("base: exit %d %+v %s", code, base, errs)
	}
	deleted := false
	setVSphereCopied(t, func(ctx context.Context, c *vsphere.Client, d *vsphere.Disk) {
		task, err := object.NewVirtualMachine(c.Vim, d.VM).RemoveSnapshot(ctx, d.Snapshot.Value, false, nil)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Error(err)
		}
		deleted = true
	})
	code, r, _, _ := runImportTest(t, append([]string{"--target", deltaDir, "--target-format", "vmdk", "--root", root, "-b", filepath.Join(baseDir, "disk.vmdk"), "--retries", "0",
		"--vsphere-moref", on.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1"}, flags...)...)
	if !deleted {
		t.Fatal("the delta import did not pass the seam between its copy and its recheck")
	}
	wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceInUse)
	if !strings.Contains(r.Message, "is gone after the import") || r.Target != "" {
		t.Fatalf("message %q, target %q", r.Message, r.Target)
	}
	emptyDir(t, deltaDir)
}
