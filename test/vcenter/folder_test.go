package vcenter

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// A VM's top links are refused while it is powered on, whenever that
// happens: a VM powered on mid-read is refused mid-read, and served again
// once off. (A fixture of its own: the shared ones are never changed.)
func TestFolderLockFollowsPowerState(t *testing.T) {
	ctx := context.Background()
	f, err := Start(ctx, Options{Size: 1 << 20, Deltas: 1, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := f.VMs[0]
	top, frozen := off.Disks[0].DataFiles[0], off.Disks[0].DataFiles[2]
	status := func(file string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, f.FolderURL(file), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(f.Username, f.Password)
		resp, err := f.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	power := func(on bool) {
		t.Helper()
		vm := object.NewVirtualMachine(f.admin.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: off.MoRef})
		task, err := vm.PowerOff(ctx)
		if on {
			task, err = vm.PowerOn(ctx)
		}
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		what        string
		on          *bool
		top, frozen int
	}{
		{"powered off", nil, http.StatusOK, http.StatusOK},
		{"powered on", ptr(true), http.StatusForbidden, http.StatusOK},
		{"powered off again", ptr(false), http.StatusOK, http.StatusOK},
	} {
		if step.on != nil {
			power(*step.on)
		}
		if got := status(top); got != step.top {
			t.Errorf("%s: the top link %s: %d, want %d", step.what, top, got, step.top)
		}
		if got := status(frozen); got != step.frozen {
			t.Errorf("%s: the frozen link %s: %d, want %d", step.what, frozen, got, step.frozen)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// A session's cookie opens /folder while the session lives, and no
// longer once it is logged out, as on ESXi.
func TestFolderSessionEndsAtLogout(t *testing.T) {
	f := fixture(t, "vCenter")
	ctx := context.Background()
	c, err := login(ctx, f, f.Username, f.Password)
	if err != nil {
		t.Fatal(err)
	}
	var session string
	for _, ck := range c.Client.Jar.Cookies(c.Client.URL()) {
		if ck.Name == soap.SessionCookieName {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatal("the SDK login set no session cookie")
	}
	status := func() int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, f.FolderURL(f.VMs[0].Disks[0].Files[0]), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: session})
		resp, err := f.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("with the live session's cookie: %d", got)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusUnauthorized {
		t.Fatalf("with the cookie of a session logged out: %d, want 401", got)
	}
}
