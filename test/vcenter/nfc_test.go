package vcenter

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// exportSnapshot opens an ExportSnapshot lease, as an NFC client does,
// and returns it with its device URLs (one a disk, in device order).
func exportSnapshot(t *testing.T, ctx context.Context, f *Fixture, moref string) (*nfc.Lease, *nfc.LeaseInfo) {
	t.Helper()
	c, err := login(ctx, f, f.Username, f.Password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	res, err := methods.ExportSnapshot(ctx, c.Client, &types.ExportSnapshot{This: types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: moref}})
	if err != nil {
		t.Fatal(err)
	}
	lease := nfc.NewLease(c.Client, res.Returnval)
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return lease, info
}

func get(t *testing.T, f *Fixture, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := f.HTTPClient().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// checkExport reads each device URL of an export and checks it streams
// the disk as a streamOptimized VMDK of the disk's content.
func checkExport(t *testing.T, f *Fixture, what string, info *nfc.LeaseInfo, disks []Disk) {
	t.Helper()
	if len(info.Items) != len(disks) {
		t.Fatalf("%s: %d device URLs, want one a disk (%d)", what, len(info.Items), len(disks))
	}
	for i, item := range info.Items {
		resp, body, err := get(t, f, item.URL.String())
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %v %v", what, item.URL, resp.Status, err)
		}
		d, err := vmdk.OpenReaderAt(bytes.NewReader(body), int64(len(body)), item.Path)
		if err != nil {
			t.Fatalf("%s %s: not a VMDK: %v", what, item.Path, err)
		}
		want, err := disks[i].Bytes()
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, d.Size())
		if _, err := d.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if d.CreateType() != "streamOptimized" || !bytes.Equal(got, want) {
			t.Errorf("%s %s: a %s of %d bytes sha256 %s, want the disk (%d bytes, %s)",
				what, item.Path, d.CreateType(), len(got), sha256Hex(got), len(want), disks[i].SHA256)
		}
	}
}

// A snapshot's NFC export streams each disk as of the snapshot, as a
// streamOptimized VMDK that reads as the disk's content; the lease is
// held until completed.
func TestNFCExportStreamsTheDiskAsOfTheSnapshot(t *testing.T) {
	eachFixture(t, func(t *testing.T, f *Fixture) {
		ctx := context.Background()
		vm := f.VMs[1] // running: its snapshots are what NFC exports
		for _, s := range vm.Snapshots {
			lease, info := exportSnapshot(t, ctx, f, s.MoRef)
			if len(info.Items) != len(s.Disks) {
				t.Fatalf("%s: %d device URLs, want one a disk (%d)", s.Name, len(info.Items), len(s.Disks))
			}
			checkExport(t, f, s.Name, info, s.Disks)
			id := lease.Reference().Value
			if !f.LeaseOpen(id) {
				t.Fatalf("%s: lease %s not open before it is completed", s.Name, id)
			}
			if err := lease.Complete(ctx); err != nil {
				t.Fatal(err)
			}
			if f.LeaseOpen(id) {
				t.Errorf("%s: lease %s still open after it was completed", s.Name, id)
			}
			if resp, _, _ := get(t, f, info.Items[0].URL.String()); resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s: a completed lease's URL answers %s", s.Name, resp.Status)
			}
		}
	})
}

// CutNFCExport breaks the next export half-way: the client reads fewer
// bytes than asked and an error, never a short success; the lease stays
// open until the client aborts it.
func TestNFCExportCutHalfWay(t *testing.T) {
	f := fixture(t, "vCenter")
	ctx := context.Background()
	lease, info := exportSnapshot(t, ctx, f, f.VMs[0].Snapshots[1].MoRef)
	const cut = 100_000
	f.CutNFCExport(cut)
	_, body, err := get(t, f, info.Items[0].URL.String())
	if err == nil || len(body) > cut {
		t.Fatalf("a cut export read %d bytes, err %v: want at most %d and an error", len(body), err, cut)
	}
	// The next read is whole again.
	resp, body, err := get(t, f, info.Items[0].URL.String())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the cut: %v %v", resp.Status, err)
	}
	if _, err := vmdk.OpenReaderAt(bytes.NewReader(body), int64(len(body)), "disk.vmdk"); err != nil {
		t.Fatalf("after the cut: %v", err)
	}
	if ids := f.NFCLeases(); len(ids) == 0 || ids[len(ids)-1] != lease.Reference().Value {
		t.Errorf("NFCLeases %v, want %s last", ids, lease.Reference().Value)
	}
	if err := lease.Abort(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if f.LeaseOpen(lease.Reference().Value) {
		t.Error("lease still open after it was aborted")
	}
}

// ExportVm, which vcsim lacks, exports a powered-off VM's disks as they
// are now, and refuses a running VM as ESXi does (InvalidPowerState).
func TestNFCExportVm(t *testing.T) {
	eachFixture(t, func(t *testing.T, f *Fixture) {
		ctx := context.Background()
		c, err := login(ctx, f, f.Username, f.Password)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Logout(ctx)
		off := object.NewVirtualMachine(c.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: f.VMs[0].MoRef})
		for range 2 { // the second export reuses the VM's export snapshot
			lease, err := off.Export(ctx)
			if err != nil {
				t.Fatal(err)
			}
			info, err := lease.Wait(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkExport(t, f, "ExportVm", info, f.VMs[0].Disks)
			if err := lease.Complete(ctx); err != nil {
				t.Fatal(err)
			}
		}
		on := object.NewVirtualMachine(c.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: f.VMs[1].MoRef})
		_, err = on.Export(ctx)
		var fault any
		if soap.IsSoapFault(err) {
			fault = soap.ToSoapFault(err).VimFault()
		}
		if ips, ok := fault.(types.InvalidPowerState); !ok || ips.ExistingState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("ExportVm of a running VM: %v (%T), want InvalidPowerState", err, fault)
		}
		// Other SDK calls still reach vcsim through the fixture's handler.
		if _, err := off.Device(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
