package vsphere

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// An NFC export (transport nfc) streams a disk the way ESXi computes it:
// the whole backing chain, as of the VM or the snapshot, read by the host
// and sent as one streamOptimized VMDK from a device URL of an
// HttpNfcLease. While the lease is open the VM cannot be powered on or
// reconfigured; the server drops a lease that gets no progress within its
// timeout, and keeps the VM locked until the lease is completed, aborted
// or expired. So every export here ends with Complete (the disk arrived
// whole) or Abort (anything else).

// Errors of an NFC export, beside the package's own (ErrInUse: a VM
// exported as it is that is not powered off).
var (
	// ErrLease: the export lease failed: not ready in time, set in error
	// by the server, or its stream cut short. A new lease may work.
	ErrLease = errors.New("vsphere: NFC export lease failed")
	// ErrDeviceURL: the lease gives no URL for the disk, or one imager
	// does not fetch (not https, a host it cannot trust).
	ErrDeviceURL = errors.New("vsphere: NFC export device URL refused")
	// ErrNotStream: the device URL served something other than a
	// streamOptimized VMDK (ESXi always sends one; a simulator serving
	// the backing file as it is does not).
	ErrNotStream = errors.New("vsphere: the NFC export is not a streamOptimized VMDK")
)

// Defaults of ExportOptions.
const (
	// DefaultReadyTimeout bounds how long a lease may stay initializing:
	// vCenter prepares an export in seconds; minutes means it is stuck.
	DefaultReadyTimeout = 5 * time.Minute
	// DefaultProgressInterval is how often progress goes to the lease,
	// which also keeps it alive (it expires after its LeaseTimeout,
	// 300 s on ESXi, without any).
	DefaultProgressInterval = 10 * time.Second
	// callTimeout bounds one lease call (progress, complete, abort): an
	// abort still runs after the import's context is cancelled (a
	// SIGTERM), and must not hold the process up.
	callTimeout = 5 * time.Second
	// maxAfterEnd bounds what may follow the end-of-stream marker (zero
	// padding at most): more means the stream was not read to its end.
	maxAfterEnd = 1 << 20
)

// exportSpec names the disk an export streams.
type exportSpec struct {
	VM types.ManagedObjectReference
	// Snapshot, when set, is exported (ExportSnapshot); else the VM as it
	// is (ExportVm), which must be powered off.
	Snapshot *types.ManagedObjectReference
	// Devices is the hardware exported: the VM's, or the snapshot's
	// config's. DiskKey is the disk's device key in it.
	Devices object.VirtualDeviceList
	DiskKey int32
	// Capacity is the disk's size in bytes, for the progress percent.
	Capacity int64
	// Label names the disk in messages ("Hard disk 1").
	Label string
}

// ExportOptions tune an export; the zero value is the defaults.
type ExportOptions struct {
	ReadyTimeout     time.Duration // 0: DefaultReadyTimeout
	ProgressInterval time.Duration // 0: DefaultProgressInterval
	// Imported returns the bytes of the disk imported so far (the
	// stream's position in the disk); nil reports 0 until the end.
	Imported func() int64
	// Log gets a line per notable event (nil: none).
	Log io.Writer
}

// Export opens an NFC export lease of d (ExportSnapshot for a snapshot,
// else ExportVm of the VM, which must be powered off), waits for it to
// be ready, and hands the disk's stream to importDisk while progress goes
// to the lease: a streamOptimized VMDK of the disk's capacity, whose
// grains importDisk writes. importDisk must return nil only once Next
// returned io.EOF (the stream proved its end); Export then checks the
// body ended there and completes the lease. On every other way out (an
// error, ctx cancelled, a panic in importDisk) the lease is aborted. A
// stream cut short fails with ErrLease, whatever importDisk made of the
// missing end.
func Export(ctx context.Context, c *Client, d *Disk, o ExportOptions, importDisk func(context.Context, *vmdk.StreamReader) error) error {
	s := exportSpec{VM: d.VM, Snapshot: d.Snapshot, DiskKey: d.Device.Key, Capacity: d.CapacityBytes, Label: d.Label}
	// The device list as exported, for the disk's place in it (the
	// keys of the lease's device URLs).
	var err error
	if s.Devices, err = exportedDevices(ctx, c.Vim, s); err != nil {
		return err
	}
	return export(ctx, c, s, o, importDisk)
}

func exportedDevices(ctx context.Context, c *vim25.Client, s exportSpec) (object.VirtualDeviceList, error) {
	pc := property.DefaultCollector(c)
	if s.Snapshot != nil {
		var snap mo.VirtualMachineSnapshot
		if err := pc.RetrieveOne(ctx, *s.Snapshot, []string{"config.hardware.device"}, &snap); err != nil {
			return nil, sdkError(err, "snapshot %s", s.Snapshot.Value)
		}
		return snap.Config.Hardware.Device, nil
	}
	var vm mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, s.VM, []string{"config.hardware.device"}, &vm); err != nil {
		return nil, sdkError(err, "VM %s", s.VM.Value)
	}
	if vm.Config == nil {
		return nil, tag(ErrTransient, "VM %s has no configuration: vSphere cannot read its files now", s.VM.Value)
	}
	return vm.Config.Hardware.Device, nil
}

func export(ctx context.Context, c *Client, s exportSpec, o ExportOptions, importDisk func(context.Context, *vmdk.StreamReader) error) (err error) {
	lease, err := openLease(ctx, c.Vim, s)
	if err != nil {
		return err
	}
	completed := false
	defer func() {
		if !completed {
			abort(ctx, lease, err, o.Log)
		}
	}()
	info, err := waitReady(ctx, c.Vim, lease, o.ReadyTimeout, s)
	if err != nil {
		return err
	}
	if s.Snapshot == nil {
		if err := checkPoweredOff(ctx, c.Vim, s.VM); err != nil {
			return err
		}
	}
	dev, err := diskURL(info, s)
	if err != nil {
		return err
	}
	u, err := deviceURL(c.sdk, dev)
	if err != nil {
		return err
	}
	logf(o.Log, "imager: exporting %s through NFC lease %s from %s\n", s.Label, lease.Value, u.Host)
	body, err := get(ctx, c, u, dev.SslThumbprint)
	if err != nil {
		return err
	}
	defer body.Close()
	// Held to the HTTP source's minimum throughput: a host that stops
	// sending mid-disk is given up on, not waited for.
	w := &watchedBody{r: source.Paced(ctx, body, c.opts.HTTP.Pace, "the NFC export of "+s.Label)}
	stop := keepAlive(ctx, lease, progressInterval(o.ProgressInterval, info.LeaseTimeout), percent(o.Imported, s.Capacity), o.Log)
	defer stop()
	br := bufio.NewReaderSize(w, source.HeadBytes)
	if err := checkStream(br, s); err != nil {
		return cut(ctx, lease, s, w, err)
	}
	sr, err := vmdk.NewStreamReader(br)
	if err != nil {
		return cut(ctx, lease, s, w, err)
	}
	defer sr.Close()
	// The descriptor's extent line is the disk (vmdk's rule): it is the
	// one vSphere describes, or this is not the disk asked for.
	if sr.Size() != s.Capacity {
		return tag(ErrChainBroken, "the export of %s streams a disk of %d bytes, vSphere gives it %d: not the disk vSphere describes", what(s), sr.Size(), s.Capacity)
	}
	if err := importDisk(ctx, sr); err != nil {
		return cut(ctx, lease, s, w, err)
	}
	if err := w.drain(); err != nil {
		return cut(ctx, lease, s, w, err)
	}
	stop()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	_ = lease.Progress(cctx, 100)
	if err := lease.Complete(cctx); err != nil {
		// The disk arrived whole (its end-of-stream marker, nothing
		// after): it is imported. The server expires the lease.
		logf(o.Log, "imager: the disk was read whole, but completing NFC lease %s failed (the server will expire it): %v\n", lease.Value, err)
	}
	completed = true
	return nil
}

// openLease asks for the export: ExportSnapshot or ExportVm.
func openLease(ctx context.Context, c *vim25.Client, s exportSpec) (*nfc.Lease, error) {
	var (
		ref types.ManagedObjectReference
		err error
	)
	if s.Snapshot != nil {
		var res *types.ExportSnapshotResponse
		if res, err = methods.ExportSnapshot(ctx, c, &types.ExportSnapshot{This: *s.Snapshot}); err == nil {
			ref = res.Returnval
		}
	} else {
		var res *types.ExportVmResponse
		if res, err = methods.ExportVm(ctx, c, &types.ExportVm{This: s.VM}); err == nil {
			ref = res.Returnval
		}
	}
	if err == nil {
		return nfc.NewLease(c, ref), nil
	}
	if cause := context.Cause(ctx); cause != nil {
		return nil, fmt.Errorf("opening an NFC export lease: %w", cause)
	}
	if fault.Is(err, &types.InvalidPowerState{}) {
		return nil, tag(ErrInUse, "VM %s is not powered off (InvalidPowerState): only a powered-off VM is exported as it is; power it off, or name a snapshot", s.VM.Value)
	}
	if e := sdkFault(err, "exporting "+what(s)); e != nil {
		return nil, e
	}
	return nil, fmt.Errorf("%w: the server refused to export %s (%v): it may be busy with another task; retry", ErrLease, what(s), err)
}

func what(s exportSpec) string {
	if s.Snapshot != nil {
		return fmt.Sprintf("%s of snapshot %s", s.Label, s.Snapshot.Value)
	}
	return fmt.Sprintf("%s of VM %s", s.Label, s.VM.Value)
}

// waitReady waits, at most timeout, for the lease to leave initializing.
func waitReady(ctx context.Context, c *vim25.Client, lease *nfc.Lease, timeout time.Duration, s exportSpec) (*types.HttpNfcLeaseInfo, error) {
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var l mo.HttpNfcLease
	pc := property.DefaultCollector(c)
	err := property.Wait(wctx, pc, lease.Reference(), []string{"state", "info", "error"}, func(changes []types.PropertyChange) bool {
		for _, ch := range changes {
			switch v := ch.Val.(type) {
			case types.HttpNfcLeaseState:
				l.State = v
			case types.HttpNfcLeaseInfo:
				l.Info = &v
			case types.LocalizedMethodFault:
				l.Error = &v
			}
		}
		return l.State == types.HttpNfcLeaseStateReady && l.Info != nil || l.State == types.HttpNfcLeaseStateError
	})
	switch {
	case context.Cause(ctx) != nil:
		return nil, fmt.Errorf("waiting for NFC lease %s: %w", lease.Value, context.Cause(ctx))
	case wctx.Err() != nil:
		return nil, fmt.Errorf("%w: NFC lease %s for %s was not ready within %v (state %q): the server is slow or stuck preparing the export; retry, or use --vsphere-transport datastore",
			ErrLease, lease.Value, what(s), timeout, l.State)
	case err != nil:
		return nil, fmt.Errorf("%w: waiting for NFC lease %s: %v", ErrLease, lease.Value, err)
	case l.State == types.HttpNfcLeaseStateError:
		return nil, fmt.Errorf("%w: the server set NFC lease %s for %s in error: %s", ErrLease, lease.Value, what(s), faultMessage(l.Error))
	}
	return l.Info, nil
}

func faultMessage(f *types.LocalizedMethodFault) string {
	switch {
	case f == nil:
		return "no reason given"
	case f.LocalizedMessage != "":
		return f.LocalizedMessage
	case f.Fault != nil:
		return reflect.TypeOf(f.Fault).Elem().Name()
	}
	return "no reason given"
}

// checkPoweredOff: the lease holds the VM, so it stays as read now.
func checkPoweredOff(ctx context.Context, c *vim25.Client, vm types.ManagedObjectReference) error {
	var m mo.VirtualMachine
	if err := property.DefaultCollector(c).RetrieveOne(ctx, vm, []string{"runtime.powerState"}, &m); err != nil {
		if e := sdkFault(err, "VM "+vm.Value); e != nil {
			return e
		}
		return fmt.Errorf("%w: reading the power state of VM %s: %v", ErrLease, vm.Value, err)
	}
	if st := m.Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOff {
		return tag(ErrInUse, "VM %s is %s: only a powered-off VM is exported as it is (its disk would change as it is read); power it off, or name a snapshot", vm.Value, st)
	}
	return nil
}

// abort ends a lease that did not complete, telling the server why.
// It runs after the import's context is cancelled too.
func abort(ctx context.Context, lease *nfc.Lease, err error, log io.Writer) {
	msg := "imager stopped the export"
	if err != nil {
		msg = err.Error()
	}
	if len(msg) > 200 {
		msg = msg[:197] + "..."
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	f := &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: msg}, LocalizedMessage: msg}
	if aerr := lease.Abort(cctx, f); aerr != nil {
		logf(log, "imager: aborting NFC lease %s failed (the server will expire it): %v\n", lease.Value, aerr)
	}
}

// keepAlive sends the lease progress every interval until stop: the
// server counts each call as the client being alive. stop waits for a
// call in flight, so none reaches the server after the lease's end (a
// cancelled ctx ends it at once).
func keepAlive(ctx context.Context, lease *nfc.Lease, every time.Duration, pct func() int32, log io.Writer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			err := lease.Progress(cctx, pct())
			cancel()
			if err != nil && ctx.Err() == nil && !failing {
				// One lost call is not the end of the lease; log once
				// until one succeeds.
				logf(log, "imager: NFC lease %s progress: %v\n", lease.Value, err)
			}
			failing = err != nil
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// progressInterval is every, or the default, kept well inside the
// lease's timeout (seconds).
func progressInterval(every time.Duration, leaseTimeout int32) time.Duration {
	if every <= 0 {
		every = DefaultProgressInterval
	}
	if leaseTimeout > 0 {
		every = min(every, time.Duration(leaseTimeout)*time.Second/4)
	}
	return max(every, 10*time.Millisecond)
}

// percent is the lease's progress: the bytes imported over the disk's
// capacity, 0 to 99 until the end.
func percent(imported func() int64, capacity int64) func() int32 {
	return func() int32 {
		if imported == nil || capacity <= 0 {
			return 0
		}
		p := int32(float64(imported()) * 100 / float64(capacity))
		return min(max(p, 0), 99)
	}
}

func logf(w io.Writer, format string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, format, a...)
	}
}
