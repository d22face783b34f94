package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// nfcVCenter is a simulated vCenter (or ESXi host) whose NFC exports
// stream each disk as ESXi does, and the import flags that reach it.
func nfcVCenter(t *testing.T, o vcenter.Options) (*vcenter.Fixture, []string) {
	t.Helper()
	f, creds := startVSphereFixture(t, o)
	return f, []string{"--vsphere-url", f.URL, "--vsphere-thumbprint", f.ThumbprintSHA256, "--credentials-dir", creds, "--vsphere-transport", "nfc"}
}

// atS1 names the running VM's disk as of its first snapshot.
func atS1(f *vcenter.Fixture) []string {
	return []string{"--vsphere-moref", f.VMs[1].MoRef, "--vsphere-snapshot", f.VMs[1].Snapshots[0].Name}
}

// lastLeaseClosed fails t unless the last lease read was completed or
// aborted.
func lastLeaseClosed(t *testing.T, f *vcenter.Fixture) {
	t.Helper()
	ids := f.NFCLeases()
	if len(ids) == 0 {
		t.Fatal("no NFC lease was read")
	}
	if f.LeaseOpen(ids[len(ids)-1]) {
		t.Errorf("NFC lease %s is still open", ids[len(ids)-1])
	}
}

// A powered-off VM's disk as it is (ExportVm) and as of a snapshot, and a
// running VM's as of a snapshot (ExportSnapshot), through NFC exports of
// a vCenter and of an ESXi host whose device URLs name the host "*":
// byte-exact against the chain written, the result saying what was read,
// the lease closed.
func TestImportVSphereNFC(t *testing.T) {
	for _, esx := range []bool{false, true} {
		t.Run(map[bool]string{false: "vCenter", true: "ESXi"}[esx], func(t *testing.T) { importNFC(t, esx) })
	}
}

func importNFC(t *testing.T, esx bool) {
	f, flags := nfcVCenter(t, vcenter.Options{ESX: esx})
	for _, c := range []struct {
		name string
		args []string
		disk vcenter.Disk
		snap string
	}{
		{"running, at s1", []string{"--vsphere-uuid", f.VMs[1].UUID, "--vsphere-snapshot", "s1"}, f.VMs[1].Snapshots[0].Disks[0], f.VMs[1].Snapshots[0].MoRef},
		{"powered off, as it is", []string{"--vsphere-moref", f.VMs[0].MoRef}, f.VMs[0].Disks[0], ""},
		{"powered off, at s2", []string{"--vsphere-moref", f.VMs[0].MoRef, "--vsphere-snapshot", "s2"}, f.VMs[0].Snapshots[1].Disks[0], f.VMs[0].Snapshots[1].MoRef},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			code, r, _, errs := runImportTest(t, append(append([]string{"--target", dir}, flags...), c.args...)...)
			want, err := c.disk.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), want)
			if v := r.VSphere; v == nil || v.Transport != jobapi.TransportNFC || v.CapacityBytes != c.disk.Capacity || v.DiskLabel != c.disk.Label ||
				(c.snap == "") != (v.Snapshot == "") || c.snap != "" && !bytes.Contains([]byte(v.Snapshot), []byte(c.snap)) {
				t.Errorf("result's vSphere part %+v", r.VSphere)
			}
			lastLeaseClosed(t, f)
		})
	}
}

// An export cut half-way: LeaseFailed, transient, no disk left, the
// lease aborted.
func TestImportVSphereNFCCut(t *testing.T) {
	f, flags := nfcVCenter(t, vcenter.Options{})
	f.CutNFCExport(1 << 20)
	dir := t.TempDir()
	code, r, _, _ := runImportTest(t, append(append([]string{"--target", dir}, flags...), atS1(f)...)...)
	wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonLeaseFailed)
	emptyDir(t, dir)
	lastLeaseClosed(t, f)
}

// SIGTERM once the lease is open: Terminated, the lease aborted before
// the process is gone.
func TestImportVSphereNFCTerminated(t *testing.T) {
	f, flags := nfcVCenter(t, vcenter.Options{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The signal arrives as the import says it opened the lease.
	log := &leaseLog{cancel: cancel}
	res := filepath.Join(t.TempDir(), "result.json")
	args := append(append([]string{"import", "--result-file", res, "--target", dir}, flags...), atS1(f)...)
	err := runImport(ctx, args[1:], &bytes.Buffer{}, log)
	if exitCode(err) != jobapi.ExitTerminated && err == nil {
		t.Fatalf("import: %v", err)
	}
	b, rerr := os.ReadFile(res)
	if rerr != nil {
		t.Fatal(rerr)
	}
	r, perr := jobapi.Parse(string(b))
	if perr != nil {
		t.Fatal(perr)
	}
	if r.Reason != jobapi.ReasonTerminated {
		t.Fatalf("result %+v, want Terminated", r)
	}
	id := log.lease()
	if id == "" {
		t.Fatal("the import never said it opened a lease")
	}
	if f.LeaseOpen(id) {
		t.Errorf("NFC lease %s still open after SIGTERM", id)
	}
	emptyDir(t, dir)
}

// leaseLog is import's stderr: on the line saying a lease is open, it
// cancels (the signal) and keeps the lease's id.
type leaseLog struct {
	mu     sync.Mutex
	cancel func()
	id     string
}

var leaseLine = regexp.MustCompile(`through NFC lease (\S+) from`)

func (l *leaseLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := leaseLine.FindSubmatch(p); m != nil && l.id == "" {
		l.id = string(m[1])
		l.cancel()
	}
	return len(p), nil
}

func (l *leaseLog) lease() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.id
}
