package vsphere

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/vmdk"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
	"github.com/vmware/govmomi/vim25/types"
)

const nfcDiskSize = 4<<20 + 192<<10 // not a whole grain table's span

// fast keeps the lease's progress frequent, so a short import sees it.
var fast = ExportOptions{ProgressInterval: 20 * time.Millisecond, ReadyTimeout: 5 * time.Second}

func withImported(o ExportOptions, si *streamImport) ExportOptions {
	o.Imported = si.done
	return o
}

// A powered-off VM's disk, exported as it is: byte-exact, the lease told
// the progress on the way and completed at the end.
func TestExportVM(t *testing.T) {
	s := newNFCSim(t, false)
	content := chainDisk(t, 1, nfcDiskSize)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, content, nfcDiskSize)))
	si := &streamImport{}
	si.afterGrain = func(int) {
		// Slow enough for the lease to hear of the progress midway.
		if si.done() > nfcDiskSize/2 {
			waitFor(t, func() bool {
				_, p := s.lease()
				return slices.ContainsFunc(p, func(p int32) bool { return p >= 50 && p < 100 })
			})
		}
	}
	if err := Export(context.Background(), s.client(), s.target(nil), withImported(fast, si), si.run); err != nil {
		t.Fatal(err)
	}
	sameAs(t, si.disk, content, nfcDiskSize)
	calls, percents := s.lease()
	if last(calls) != "HttpNfcLeaseComplete" || slices.Contains(calls, "HttpNfcLeaseAbort") {
		t.Errorf("lease calls %q: want progress, then complete, no abort", calls)
	}
	if last(percents) != 100 || !slices.IsSorted(percents) {
		t.Errorf("progress %v: want rising to 100", percents)
	}
	if !s.gone() {
		t.Error("vcsim still holds the lease")
	}
}

// A snapshot's disk, not the VM's current one: ExportSnapshot, on an
// ESXi host whose device URLs name the host "*".
func TestExportSnapshotStarHost(t *testing.T) {
	s := newNFCSim(t, true)
	then := chainDisk(t, 2, nfcDiskSize)
	s.setDisk(s.upload("then-stream.vmdk", streamOf(t, then, nfcDiskSize)))
	snap := s.snapshot("before")
	s.setDisk(s.upload("now-stream.vmdk", streamOf(t, vmdktest.MixedContent(3, nfcDiskSize), nfcDiskSize)))
	if _, err := s.vm.PowerOn(context.Background()); err != nil { // a snapshot is frozen: a running VM is fine
		t.Fatal(err)
	}
	si := &streamImport{}
	if err := Export(context.Background(), s.client(), s.target(snap), withImported(fast, si), si.run); err != nil {
		t.Fatal(err)
	}
	sameAs(t, si.disk, then, nfcDiskSize)
	if u := s.upstream[len(s.upstream)-1]; !strings.Contains(u, "://*/") {
		t.Fatalf("vcsim's ESXi device URL %s does not name the host *: the test proves nothing", u)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseComplete" {
		t.Errorf("lease calls %q", calls)
	}
}

// ESXi keys device URLs by controller and unit; the disk's is picked
// among others (a decoy first).
func TestExportESXiKeys(t *testing.T) {
	s := newNFCSim(t, false)
	s.esxiKeys = true
	content := chainDisk(t, 4, nfcDiskSize)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, content, nfcDiskSize)))
	si := &streamImport{}
	if err := Export(context.Background(), s.client(), s.target(nil), withImported(fast, si), si.run); err != nil {
		t.Fatal(err)
	}
	sameAs(t, si.disk, content, nfcDiskSize)
}

// A device URL on another host (vCenter names the ESXi host serving the
// disk) is fetched when its certificate matches the lease's thumbprint,
// and refused when it does not.
func TestExportOtherHostThumbprint(t *testing.T) {
	s := newNFCSim(t, false)
	content := chainDisk(t, 5, nfcDiskSize)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, content, nfcDiskSize)))
	s.viaProxy = true
	si := &streamImport{}
	if err := Export(context.Background(), s.client(), s.target(nil), withImported(fast, si), si.run); err != nil {
		t.Fatal(err)
	}
	sameAs(t, si.disk, content, nfcDiskSize)

	s.proxyPrint = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33"
	err := Export(context.Background(), s.client(), s.target(nil), fast, (&streamImport{}).run)
	if !errors.Is(err, ErrDeviceURL) {
		t.Fatalf("a host whose certificate is not the lease's thumbprint: %v, want ErrDeviceURL", err)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" || !s.gone() {
		t.Errorf("lease calls %q: want the lease aborted", calls)
	}
}

// A body cut half-way: ErrLease (a new lease may work), never a disk,
// the lease aborted; and the server's own account when it set the lease
// in error.
func TestExportCutHalfway(t *testing.T) {
	for _, failLease := range []bool{false, true} {
		s := newNFCSim(t, false)
		content := chainDisk(t, 6, nfcDiskSize)
		stream := streamOf(t, content, nfcDiskSize)
		s.setDisk(s.upload("disk-stream.vmdk", stream))
		s.viaProxy, s.cutAfter, s.failLease = true, int64(len(stream)/2), failLease
		si := &streamImport{}
		err := Export(context.Background(), s.client(), s.target(nil), withImported(fast, si), si.run)
		if !errors.Is(err, ErrLease) {
			t.Fatalf("cut stream: %v, want ErrLease", err)
		}
		if failLease && !strings.Contains(err.Error(), "the host stopped answering") {
			t.Errorf("the lease's error is not in the message: %v", err)
		}
		calls, _ := s.lease()
		if slices.Contains(calls, "HttpNfcLeaseComplete") || last(calls) != "HttpNfcLeaseAbort" || !s.gone() {
			t.Errorf("lease calls %q: want the lease aborted, never completed", calls)
		}
	}
}

// A lease that never leaves initializing: ErrLease once the timeout
// passes, the lease aborted.
func TestExportNeverReady(t *testing.T) {
	s := newNFCSim(t, false)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, vmdktest.MixedContent(7, nfcDiskSize), nfcDiskSize)))
	s.notReady = true
	o := fast
	o.ReadyTimeout = 200 * time.Millisecond
	err := Export(context.Background(), s.client(), s.target(nil), o, (&streamImport{}).run)
	if !errors.Is(err, ErrLease) || !strings.Contains(err.Error(), "not ready within 200ms") {
		t.Fatalf("lease never ready: %v", err)
	}
	if calls, _ := s.lease(); !slices.Equal(calls, []string{"HttpNfcLeaseAbort"}) || !s.gone() {
		t.Errorf("lease calls %q: want it aborted", calls)
	}
}

// Cancelled mid-stream (a SIGTERM) or a panic in the import: the lease is
// aborted all the same.
func TestExportCancelAndPanic(t *testing.T) {
	s := newNFCSim(t, false)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, vmdktest.MixedContent(8, nfcDiskSize), nfcDiskSize)))

	cause := errors.New("terminated by a signal")
	ctx, cancel := context.WithCancelCause(context.Background())
	si := &streamImport{afterGrain: func(n int) {
		if n == 2 {
			cancel(cause)
		}
	}}
	err := Export(ctx, s.client(), s.target(nil), fast, func(ctx context.Context, sr *vmdk.StreamReader) error {
		if err := si.run(ctx, sr); err != nil {
			return err
		}
		return context.Cause(ctx) // the import checks its context between grains
	})
	if !errors.Is(err, cause) {
		t.Fatalf("cancelled: %v, want the cause", err)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" || !s.gone() {
		t.Errorf("cancelled: lease calls %q: want it aborted", calls)
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not go through")
			}
		}()
		_ = Export(context.Background(), s.client(), s.target(nil), fast, (&streamImport{afterGrain: func(int) { panic("boom") }}).run)
	}()
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" || slices.Contains(calls, "HttpNfcLeaseComplete") || !s.gone() {
		t.Errorf("panic: lease calls %q: want it aborted", calls)
	}
}

// vcsim serves a VM's backing file as it is: a text descriptor is refused
// (it names files the export does not hold), never imported.
func TestExportDescriptorRefused(t *testing.T) {
	s := newNFCSim(t, false)
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\nRW 8192 VMFS \"disk-flat.vmdk\"\n"
	s.setDisk(s.upload("disk.vmdk", []byte(desc)))
	called := false
	err := Export(context.Background(), s.client(), s.target(nil), fast, func(context.Context, *vmdk.StreamReader) error {
		called = true
		return nil
	})
	if !errors.Is(err, ErrNotStream) || !strings.Contains(err.Error(), "descriptor") || called {
		t.Fatalf("descriptor export: %v (import called: %v), want ErrNotStream", err, called)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" {
		t.Errorf("lease calls %q: want it aborted", calls)
	}
}

// A stream of another size than vSphere's capacity is not the disk: refused
// before a byte is imported.
func TestExportWrongSize(t *testing.T) {
	s := newNFCSim(t, false)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, vmdktest.MixedContent(9, nfcDiskSize-64<<10), nfcDiskSize-64<<10)))
	called := false
	err := Export(context.Background(), s.client(), s.target(nil), fast, func(context.Context, *vmdk.StreamReader) error {
		called = true
		return nil
	})
	if !errors.Is(err, ErrChainBroken) || called {
		t.Fatalf("a stream %d bytes short: %v (import called: %v), want ErrChainBroken", 64<<10, err, called)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" {
		t.Errorf("lease calls %q: want it aborted", calls)
	}
}

// A VM powered on between the check and the lease (the lease then holds
// it running) is refused once the lease is ready, and the lease aborted.
func TestExportPoweredOnAfterCheck(t *testing.T) {
	s := newNFCSim(t, false)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, vmdktest.MixedContent(10, nfcDiskSize), nfcDiskSize)))
	if _, err := s.vm.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.anyPower = true
	called := false
	err := Export(context.Background(), s.client(), s.target(nil), fast, func(context.Context, *vmdk.StreamReader) error {
		called = true
		return nil
	})
	if !errors.Is(err, ErrInUse) || called {
		t.Fatalf("running VM, lease granted: %v (import called: %v), want ErrInUse", err, called)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" || !s.gone() {
		t.Errorf("lease calls %q: want it aborted", calls)
	}
}

// A device URL in the clear is not fetched.
func TestExportPlainHTTPRefused(t *testing.T) {
	s := newNFCSim(t, false)
	s.setDisk(s.upload("disk-stream.vmdk", streamOf(t, vmdktest.MixedContent(11, nfcDiskSize), nfcDiskSize)))
	s.plainHTTP = true
	err := Export(context.Background(), s.client(), s.target(nil), fast, (&streamImport{}).run)
	if !errors.Is(err, ErrDeviceURL) || !strings.Contains(err.Error(), "not https") {
		t.Fatalf("http:// device URL: %v, want ErrDeviceURL", err)
	}
	if calls, _ := s.lease(); last(calls) != "HttpNfcLeaseAbort" {
		t.Errorf("lease calls %q: want it aborted", calls)
	}
}

// A VM that is running is not exported as it is.
func TestExportPoweredOn(t *testing.T) {
	s := newNFCSim(t, false)
	if _, err := s.vm.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := Export(context.Background(), s.client(), s.target(nil), fast, (&streamImport{}).run)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("running VM: %v, want ErrInUse", err)
	}
}

// The device key picks the lease's URL: the vcsim form counts file-backed
// disks, the ESXi form names controller and unit.
func TestDeviceKeys(t *testing.T) {
	unit := int32(1)
	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{BusNumber: 2, VirtualDevice: types.VirtualDevice{Key: 1000}}}}
	backing := &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[ds] vm/a.vmdk"}}
	d0 := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: 2000, ControllerKey: 1000, UnitNumber: new(int32), Backing: backing}}
	d1 := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: 2001, ControllerKey: 1000, UnitNumber: &unit, Backing: backing}}
	s := exportSpec{VM: types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-7"}, Devices: []types.BaseVirtualDevice{ctrl, d0, d1}, DiskKey: 2001}
	keys, err := deviceKeys(s)
	if err != nil || !slices.Equal(keys, []string{"/vm-7/ParaVirtualSCSIController2:1", "/vm-7/disk:1"}) {
		t.Fatalf("keys %q, %v", keys, err)
	}
	yes := true
	info := &types.HttpNfcLeaseInfo{DeviceUrl: []types.HttpNfcLeaseDeviceUrl{
		{Key: "/vm-7/ParaVirtualSCSIController2:0", Url: "https://h/nfc/t/disk-0.vmdk", Disk: &yes},
		{Key: "/vm-7/ParaVirtualSCSIController2:1", Url: "https://h/nfc/t/disk-1.vmdk", Disk: &yes},
	}}
	if d, err := diskURL(info, s); err != nil || d.Url != "https://h/nfc/t/disk-1.vmdk" {
		t.Fatalf("picked %v, %v", d.Url, err)
	}
	info.DeviceUrl = info.DeviceUrl[:1]
	if _, err := diskURL(info, s); !errors.Is(err, ErrDeviceURL) {
		t.Fatalf("no URL for the disk: %v", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("timed out")
		}
	}
}

// last is the last of xs, or the zero value.
func last[T any](xs []T) (x T) {
	if len(xs) > 0 {
		x = xs[len(xs)-1]
	}
	return x
}

// Progress goes to the lease well inside its timeout, and reads 0 to 99
// until the end, whatever the counts.
func TestLeaseProgress(t *testing.T) {
	for _, c := range []struct {
		every   time.Duration
		timeout int32
		want    time.Duration
	}{
		{0, 300, DefaultProgressInterval},
		{0, 20, 5 * time.Second},
		{time.Minute, 0, time.Minute},
		{time.Second, 1, 250 * time.Millisecond},
	} {
		if got := progressInterval(c.every, c.timeout); got != c.want {
			t.Errorf("progressInterval(%v, %d s) = %v, want %v", c.every, c.timeout, got, c.want)
		}
	}
	for _, c := range []struct {
		done, capacity int64
		want           int32
	}{
		{0, 100, 0}, {50, 100, 50}, {100, 100, 99}, {500, 100, 99}, {-5, 100, 0}, {5, 0, 0}, {1 << 62, 1 << 62, 99},
	} {
		if got := percent(func() int64 { return c.done }, c.capacity)(); got != c.want {
			t.Errorf("percent(%d of %d) = %d, want %d", c.done, c.capacity, got, c.want)
		}
	}
}
