package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

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

// sdkProxy is a TLS proxy in front of the fixture, SDK and /folder alike,
// whose hook sees each request first and may answer it itself (true). It
// returns the proxy's SDK URL and its certificate's thumbprint.
func sdkProxy(t *testing.T, f *vcenter.Fixture, hook func(w http.ResponseWriter, r *http.Request) bool) (string, string) {
	t.Helper()
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = ""
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hook(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(srv.Certificate().Raw)
	return srv.URL + "/sdk", hex.EncodeToString(sum[:])
}

// A powered-off VM's /folder reads refused (403) part-way through the
// copy, after the SDK took the credentials and the chain opened: not a
// bad password (Unauthorized, permanent) but the VM powered on mid-copy,
// which ESXi's locks show as 403; a 401 then is the session ended.
func TestImportVSphereRefusedMidCopy(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 57, Size: 1<<20 + 4096, Deltas: 1})
	off := f.VMs[0]
	au, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	au.User = url.UserPassword(f.Username, f.Password)
	admin, err := govmomi.NewClient(context.Background(), au, true)
	if err != nil {
		t.Fatal(err)
	}
	power := func(f func(context.Context) (*object.Task, error)) {
		task, err := f(context.Background())
		if err == nil {
			err = task.Wait(context.Background())
		}
		if err != nil {
			t.Error(err)
		}
	}
	// The request after which the VM is powered on (the fixture then
	// refuses its top link) or the proxy refuses every /folder read:
	// past the chain's opening, before the copy's end.
	const after = 8
	for _, c := range []struct {
		name    string
		powerOn bool
		status  int // the proxy's refusal, without powerOn
		reason  string
		want    string
	}{
		{"the VM powered on", true, 0, jobapi.ReasonSourceInUse, "went from poweredOff to poweredOn"},
		{"a 403 the VM does not explain", false, http.StatusForbidden, jobapi.ReasonSourceInUse, "most likely the VM was powered on"},
		{"a 401: the session ended", false, http.StatusUnauthorized, jobapi.ReasonNetworkError, "no longer takes the SDK session"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n atomic.Int64
			sdk, pin := sdkProxy(t, f, func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/folder/") || n.Add(1) <= after {
					return false
				}
				if !c.powerOn {
					http.Error(w, http.StatusText(c.status), c.status)
					return true
				}
				if n.Load() == after+1 {
					vm := object.NewVirtualMachine(admin.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: off.MoRef})
					power(vm.PowerOn)
					t.Cleanup(func() { power(vm.PowerOff) })
				}
				return false
			})
			target := t.TempDir()
			code, r, _, errs := runImportTest(t, "--target", target, "--retries", "0", "--vsphere-url", sdk, "--credentials-dir", creds,
				"--vsphere-thumbprint", pin, "--vsphere-moref", off.MoRef, "--http-connections", "1")
			if n.Load() <= after {
				t.Fatalf("only %d /folder requests: the copy was over before the refusal (%s)", n.Load(), errs)
			}
			wantFailed(t, code, r, jobapi.ExitTransient, c.reason)
			if !strings.Contains(r.Message, c.want) {
				t.Fatalf("message %q, want %q in it", r.Message, c.want)
			}
			emptyDir(t, target)
		})
	}
}

// A snapshot's frozen chain refused (403) mid-copy, whole or as a delta:
// SourceInUse (the snapshot most likely being deleted), no disk left.
func TestImportVSphereSnapshotRefusedMidCopy(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 59, Size: 1<<20 + 4096})
	on := f.VMs[1]
	root := t.TempDir()
	base := filepath.Join(root, "s1")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	code, r, _, errs := runImportTest(t, "--target", base, "--target-format", "vmdk", "--retries", "0", "--vsphere-url", f.URL, "--credentials-dir", creds,
		"--vsphere-thumbprint", f.ThumbprintSHA256, "--vsphere-moref", on.MoRef, "--vsphere-snapshot", "s1")
	if code != 0 {
		t.Fatalf("the base at s1: exit %d %+v %s", code, r, errs)
	}
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"whole", []string{"--vsphere-snapshot", "s2"}},
		{"a delta", []string{"--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1", "--target-format", "vmdk", "-b", filepath.Join(base, "disk.vmdk"), "--root", root}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// total: the /folder requests of the import left alone; the
			// last two are refused, well past the chain's opening.
			var n, total atomic.Int64
			var refuse atomic.Bool
			sdk, pin := sdkProxy(t, f, func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/folder/") {
					return false
				}
				if k := n.Add(1); refuse.Load() && k > total.Load()-2 {
					http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
					return true
				}
				return false
			})
			run := func() (int, *jobapi.Result, string, string) {
				target := filepath.Join(t.TempDir(), "out")
				if err := os.Mkdir(target, 0o755); err != nil {
					t.Fatal(err)
				}
				code, r, _, errs := runImportTest(t, append([]string{"--target", target, "--retries", "0", "--vsphere-url", sdk, "--credentials-dir", creds,
					"--vsphere-thumbprint", pin, "--vsphere-moref", on.MoRef, "--http-connections", "1"}, c.flags...)...)
				return code, r, target, errs
			}
			if code, r, _, errs := run(); code != 0 {
				t.Fatalf("left alone: exit %d %+v %s", code, r, errs)
			}
			total.Store(n.Swap(0))
			refuse.Store(true)
			code, r, target, _ := run()
			wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceInUse)
			if want := "most likely the snapshot is being deleted or consolidated"; !strings.Contains(r.Message, want) {
				t.Fatalf("message %q, want %q in it", r.Message, want)
			}
			emptyDir(t, target)
		})
	}
}
