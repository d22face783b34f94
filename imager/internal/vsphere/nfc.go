package vsphere

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/vmdk"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
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
		return fmt.Errorf("%w: reading the power state of VM %s: %v", ErrLease, vm.Value, err)
	}
	if st := m.Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOff {
		return tag(ErrInUse, "VM %s is %s: only a powered-off VM is exported as it is (its disk would change as it is read); power it off, or name a snapshot", vm.Value, st)
	}
	return nil
}

// diskURL picks the lease's URL of the disk. ESXi keys a device URL by
// the VM and the disk's place: "/vm-42/VirtualLsiLogicController0:1"
// (controller class, bus number, unit number); vcsim by the disk's order
// among the VM's file-backed disks: "/vm-42/disk:0".
func diskURL(info *types.HttpNfcLeaseInfo, s exportSpec) (types.HttpNfcLeaseDeviceUrl, error) {
	keys, err := deviceKeys(s)
	if err != nil {
		return types.HttpNfcLeaseDeviceUrl{}, err
	}
	var found []types.HttpNfcLeaseDeviceUrl
	var seen []string
	for _, d := range info.DeviceUrl {
		if len(seen) < 8 {
			seen = append(seen, d.Key)
		}
		if d.Disk != nil && !*d.Disk {
			continue
		}
		for _, k := range keys {
			if d.Key == k {
				found = append(found, d)
			}
		}
	}
	if len(found) != 1 {
		return types.HttpNfcLeaseDeviceUrl{}, fmt.Errorf("%w: the lease gives %d URLs for %s (key %s), among %d device URLs %q",
			ErrDeviceURL, len(found), what(s), strings.Join(keys, " or "), len(info.DeviceUrl), seen)
	}
	return found[0], nil
}

// deviceKeys are the keys a lease may give the disk's URL.
func deviceKeys(s exportSpec) ([]string, error) {
	disk, ok := s.Devices.FindByKey(s.DiskKey).(*types.VirtualDisk)
	if !ok {
		return nil, fmt.Errorf("%w: %s: no virtual disk with device key %d in the exported hardware", ErrDeviceURL, what(s), s.DiskKey)
	}
	n := 0
	for _, d := range s.Devices {
		if d == types.BaseVirtualDevice(disk) {
			break
		}
		if vd, ok := d.(*types.VirtualDisk); ok {
			if _, file := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo); file {
				n++
			}
		}
	}
	keys := []string{fmt.Sprintf("/%s/disk:%d", s.VM.Value, n)}
	if ctrl, ok := s.Devices.FindByKey(disk.ControllerKey).(types.BaseVirtualController); ok && disk.UnitNumber != nil {
		class := reflect.TypeOf(ctrl).Elem().Name()
		keys = append([]string{fmt.Sprintf("/%s/%s%d:%d", s.VM.Value, class, ctrl.GetVirtualController().BusNumber, *disk.UnitNumber)}, keys...)
	}
	return keys, nil
}

// deviceURL is the URL to GET: "*" is the SDK host (the lease's own
// rule, when the SDK is an ESXi host); https only; the SDK host, trusted
// as the SDK connection is, or another host (vCenter names the ESXi host
// that serves the disk) whose certificate matches the thumbprint the
// lease gives, which came over that trusted connection, or else the
// same CAs.
func deviceURL(sdk *url.URL, d types.HttpNfcLeaseDeviceUrl) (*url.URL, error) {
	u, err := url.Parse(d.Url)
	if err != nil {
		return nil, fmt.Errorf("%w: the lease's device URL does not parse: %v", ErrDeviceURL, err)
	}
	if u.Hostname() == "*" {
		u.Host = sdk.Host
	}
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return nil, fmt.Errorf("%w: %s is not https: a disk is not read in the clear", ErrDeviceURL, describe(u))
	case u.User != nil:
		return nil, fmt.Errorf("%w: %s carries credentials", ErrDeviceURL, describe(u))
	case u.Hostname() == "":
		return nil, fmt.Errorf("%w: %s names no host", ErrDeviceURL, describe(u))
	}
	return u, nil
}

func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return "443"
}

// describe names a device URL without its path's lease ticket: the host
// and the file.
func describe(u *url.URL) string {
	return u.Scheme + "://" + u.Host + "/.../" + path.Base(u.Path)
}

// get GETs the device URL. The SDK's host is trusted as the SDK is, and
// given the session's cookie (an ESXi host's NFC wants it); another host
// (vCenter names the ESXi host that serves the disk, with a ticket in the
// URL) by the thumbprint the lease gives it, which came over the trusted
// SDK connection, or else by the same roots and --ca-file. Redirects are
// refused: the lease names the host that serves the disk.
func get(ctx context.Context, c *Client, u *url.URL, thumbprint string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDeviceURL, describe(u), err)
	}
	cfg := c.TLS()
	if sameHost(u, c.sdk) {
		if ck := c.Vim.SessionCookie(); ck != nil {
			req.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: ck.Value})
		}
	} else {
		// No thumbprint from the lease: the roots, as without
		// --vsphere-thumbprint; a pin replaces them.
		ca := c.opts.HTTP.CAFile
		if thumbprint != "" {
			ca = ""
		}
		if cfg, err = tlsConfig(u.Hostname(), thumbprint, ca); err != nil {
			return nil, fmt.Errorf("%w: the lease's thumbprint for %s: %v", ErrDeviceURL, u.Host, err)
		}
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSClientConfig:       cfg,
			ResponseHeaderTimeout: loginTimeout,
			DisableKeepAlives:     true, // one request: nothing idle is left behind
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the whole URL, ticket and all
		}
		var cert *tls.CertificateVerificationError
		switch {
		case context.Cause(ctx) != nil:
			return nil, fmt.Errorf("GET %s: %w", describe(u), context.Cause(ctx))
		case errors.As(err, &cert):
			return nil, fmt.Errorf("%w: %s: %w", ErrDeviceURL, describe(u), err)
		}
		return nil, fmt.Errorf("%w: GET %s: %v", ErrLease, describe(u), err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s", ErrLease, describe(u), res.Status)
	}
	return res.Body, nil
}

// checkStream: the export starts like a streamOptimized VMDK, as ESXi
// sends every disk (application/x-vnd.vmware-streamVmdk). vcsim serves
// the backing file as it is: a text descriptor there names files the
// stream does not hold, and is never imported as the disk.
func checkStream(br *bufio.Reader, s exportSpec) error {
	head, err := br.Peek(source.HeadBytes)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if len(head) == 0 {
		return fmt.Errorf("reading the export of %s: %w", what(s), io.ErrUnexpectedEOF)
	}
	kind, err := source.Detect(head, "auto")
	if err == nil && kind == source.KindStream {
		return nil
	}
	got := "data that is not a VMDK"
	if k, perr := vmdk.Probe(bytes.NewReader(head)); perr == nil {
		got = "a VMDK " + k.String() + " file"
	}
	return fmt.Errorf("%w: the export of %s sent %s, not a streamOptimized stream: the server serves disk files as they are (vcsim does); use --vsphere-transport datastore",
		ErrNotStream, what(s), got)
}

// watchedBody is the device URL's body, as read: how much, and how it
// ended. The stream reader reads it from its own goroutine.
type watchedBody struct {
	r  io.Reader
	mu sync.Mutex
	n  int64
	// end is the first error the body returned, io.EOF included.
	end error
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.mu.Lock()
	w.n += int64(n)
	if err != nil && w.end == nil {
		w.end = err
	}
	w.mu.Unlock()
	return n, err
}

func (w *watchedBody) state() (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.end
}

// drain reads what follows the stream's end: zero padding at most, then
// the body's clean end.
func (w *watchedBody) drain() error {
	buf := make([]byte, 32<<10)
	var after int64
	for {
		n, err := w.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("%w: data after the stream's end-of-stream marker", ErrNotStream)
			}
		}
		after += int64(n)
		if after > maxAfterEnd {
			return fmt.Errorf("%w: more than %d bytes after the stream's end-of-stream marker", ErrNotStream, maxAfterEnd)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after the end-of-stream marker: %w", err)
		}
	}
}

// cut is the error of an import that failed while the stream was read.
// A body that ended or broke first makes it ErrLease: whatever the
// reader made of the missing end (a truncated VMDK), the server or the
// network stopped the transfer, and a new lease may complete it. The
// lease's state says which, when the server set it in error.
func cut(ctx context.Context, lease *nfc.Lease, s exportSpec, w *watchedBody, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (exporting %s: %v)", cause, what(s), err)
	}
	n, end := w.state()
	if end == nil || !(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, end)) {
		return err
	}
	why := "the body ended"
	if end != io.EOF {
		why = end.Error()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if l, perr := lease.Properties(cctx, "state", "error"); perr == nil && l.State == types.HttpNfcLeaseStateError {
		why += "; the server set the lease in error: " + faultMessage(l.Error)
	}
	return fmt.Errorf("%w: the export of %s stopped after %d bytes, before the stream's end-of-stream marker (%s): retry", ErrLease, what(s), n, why)
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
