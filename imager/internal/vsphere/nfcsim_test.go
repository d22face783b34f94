package vsphere

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// nfcSim is vcsim in process, with what its leases do watched and bent:
// vcsim has no ExportVm (exportVM adds it, as a snapshot of the VM as it
// is), keys device URLs its own way (esxiKeys gives ESXi's), and serves
// each backing file as it is (so tests give a VM streamOptimized files,
// the form ESXi exports every disk in).
type nfcSim struct {
	t      *testing.T
	model  *simulator.Model
	server *simulator.Server
	c      *vim25.Client
	vm     *object.VirtualMachine
	ds     *object.Datastore
	dir    string // the VM's directory on ds

	mu       sync.Mutex
	calls    []string // HttpNfcLease methods called, in order
	percents []int32  // HttpNfcLeaseProgress percents
	upstream []string // vcsim's device URLs, as it gave them

	// Knobs, set before an export.
	esxiKeys   bool   // keys as ESXi gives them, and a decoy disk URL first
	notReady   bool   // leases stay initializing
	viaProxy   bool   // device URLs on another host (the proxy), with its thumbprint
	proxyPrint string // the thumbprint leases give for the proxy ("": the right one)
	cutAfter   int64  // the proxy cuts bodies after this many bytes (0: never)
	failLease  bool   // the proxy sets the lease in error before it cuts
	anyPower   bool   // ExportVm exports a VM that is not off (the power-on race)
	plainHTTP  bool   // device URLs are http://
	proxy      *httptest.Server
	leaseCtx   *simulator.Context // the context the last lease was made in
	lastLease  *simulator.HttpNfcLease
}

func newNFCSim(t *testing.T, esx bool) *nfcSim {
	t.Helper()
	model := simulator.VPX()
	if esx {
		model = simulator.ESX()
	}
	model.Machine = 1
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	s := &nfcSim{t: t, model: model}
	model.Map().Handler = s.handle
	model.Service.TLS = new(tls.Config)
	s.server = model.Service.NewServer()
	t.Cleanup(func() { s.server.Close(); model.Remove() })
	s.proxy = httptest.NewTLSServer(http.HandlerFunc(s.serveProxy))
	t.Cleanup(s.proxy.Close)

	ctx := context.Background()
	gc, err := govmomi.NewClient(ctx, s.server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	s.c = gc.Client
	s.c.RoundTripper = bent{s.c.RoundTripper}
	f := find.NewFinder(s.c)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	vms, err := f.VirtualMachineList(ctx, "*")
	if err != nil || len(vms) == 0 {
		t.Fatalf("VMs: %v %v", vms, err)
	}
	s.vm = vms[0]
	if s.ds, err = f.DefaultDatastore(ctx); err != nil {
		t.Fatal(err)
	}
	s.dir = s.vm.Name()
	if task, err := s.vm.PowerOff(ctx); err == nil {
		_ = task.Wait(ctx)
	}
	return s
}

// handle is the registry's hook on every SOAP call: it records lease
// calls and serves the exports through exporter.
func (s *nfcSim) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	switch m.Name {
	case "HttpNfcLeaseProgress", "HttpNfcLeaseComplete", "HttpNfcLeaseAbort":
		s.mu.Lock()
		s.calls = append(s.calls, m.Name)
		if p, ok := m.Body.(*types.HttpNfcLeaseProgress); ok {
			s.percents = append(s.percents, p.Percent)
		}
		s.mu.Unlock()
	case "ExportVm", "ExportSnapshot":
		if v, ok := strings.CutPrefix(m.This.Value, bentPrefix); ok {
			return &exporter{sim: s, this: m.This, real: types.ManagedObjectReference{Type: m.This.Type, Value: v}}, nil
		}
	}
	return nil, nil
}

// bent sends exports to the exporter: vcsim dispatches a call to the
// object its reference names whatever the registry's hook says, unless
// no object has that name.
type bent struct{ soap.RoundTripper }

const bentPrefix = "bent-"

func (b bent) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	switch r := req.(type) {
	case *methods.ExportVmBody:
		r.Req.This.Value = bentPrefix + r.Req.This.Value
	case *methods.ExportSnapshotBody:
		r.Req.This.Value = bentPrefix + r.Req.This.Value
	}
	return b.RoundTripper.RoundTrip(ctx, req, res)
}

// exporter serves ExportVm (vcsim has none: a snapshot of the VM as it
// is, exported) and ExportSnapshot, then bends the lease as the knobs say.
type exporter struct {
	sim        *nfcSim
	this, real types.ManagedObjectReference
}

func (e *exporter) Reference() types.ManagedObjectReference { return e.this }

func (e *exporter) ExportVm(ctx *simulator.Context, req *types.ExportVm) soap.HasFault {
	vm := ctx.Map.Get(e.real).(*simulator.VirtualMachine)
	if st := vm.Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOff && !e.sim.anyPower {
		return &methods.ExportVmBody{Fault_: simulator.Fault("", &types.InvalidPowerState{ExistingState: st, RequestedState: types.VirtualMachinePowerStatePoweredOff})}
	}
	snap := &simulator.VirtualMachineSnapshot{}
	snap.Vm, snap.Config = vm.Self, *vm.Config
	res := snap.ExportSnapshot(ctx, &types.ExportSnapshot{This: vm.Self}).(*methods.ExportSnapshotBody)
	e.bend(ctx, res.Res.Returnval, vm)
	return &methods.ExportVmBody{Res: &types.ExportVmResponse{Returnval: res.Res.Returnval}}
}

func (e *exporter) ExportSnapshot(ctx *simulator.Context, req *types.ExportSnapshot) soap.HasFault {
	snap := ctx.Map.Get(e.real).(*simulator.VirtualMachineSnapshot)
	res := snap.ExportSnapshot(ctx, &types.ExportSnapshot{This: e.real}).(*methods.ExportSnapshotBody)
	e.bend(ctx, res.Res.Returnval, ctx.Map.Get(snap.Vm).(*simulator.VirtualMachine))
	return res
}

func (e *exporter) bend(ctx *simulator.Context, ref types.ManagedObjectReference, vm *simulator.VirtualMachine) {
	s := e.sim
	lease := ctx.Session.Get(ref).(*simulator.HttpNfcLease)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaseCtx, s.lastLease = ctx, lease
	urls := lease.Info.DeviceUrl
	for i := range urls {
		s.upstream = append(s.upstream, urls[i].Url)
		if s.plainHTTP {
			urls[i].Url = strings.Replace(urls[i].Url, "https://", "http://", 1)
		}
		if s.viaProxy {
			u, _ := url.Parse(urls[i].Url)
			p, _ := url.Parse(s.proxy.URL)
			u.Host = p.Host
			urls[i].Url = u.String()
			urls[i].SslThumbprint = s.proxyPrint
			if s.proxyPrint == "" {
				urls[i].SslThumbprint = soap.ThumbprintSHA1(s.proxy.Certificate())
			}
		}
	}
	if s.esxiKeys {
		// ESXi's keys: the controller class, bus and unit. A decoy
		// first: a second disk's URL serving another file.
		devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
		for i := range urls {
			if urls[i].Disk == nil || !*urls[i].Disk {
				continue
			}
			disk := devices.SelectByType((*types.VirtualDisk)(nil))[0].(*types.VirtualDisk)
			ctrl := devices.FindByKey(disk.ControllerKey).(types.BaseVirtualController)
			urls[i].Key = fmt.Sprintf("/%s/%T%d:%d", vm.Self.Value, ctrl, ctrl.GetVirtualController().BusNumber, *disk.UnitNumber)
			urls[i].Key = strings.Replace(urls[i].Key, "*types.", "", 1)
			decoy := urls[i]
			decoy.Key = fmt.Sprintf("/%s/VirtualIDEController1:0", vm.Self.Value)
			decoy.Url = strings.Replace(decoy.Url, "/nfc/", "/nfc-decoy/", 1)
			urls = append([]types.HttpNfcLeaseDeviceUrl{decoy}, urls...)
			break
		}
		lease.Info.DeviceUrl = urls
	}
	if s.notReady {
		lease.State = types.HttpNfcLeaseStateInitializing
	}
}

// serveProxy serves a device URL from "another host": vcsim's own, cut
// or failed as the knobs say.
func (s *nfcSim) serveProxy(w http.ResponseWriter, r *http.Request) {
	u, _ := url.Parse(s.server.URL.String())
	u.Path, u.User = r.URL.Path, nil
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := hc.Get(u.String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	w.WriteHeader(res.StatusCode)
	if s.cutAfter <= 0 {
		io.Copy(w, res.Body)
		return
	}
	io.CopyN(w, res.Body, s.cutAfter)
	w.(http.Flusher).Flush()
	if s.failLease {
		s.mu.Lock()
		ctx, lease := s.leaseCtx, s.lastLease
		s.mu.Unlock()
		ctx.WithLock(lease, func() {
			ctx.Update(lease, []types.PropertyChange{
				{Name: "state", Val: types.HttpNfcLeaseStateError},
				{Name: "error", Val: &types.LocalizedMethodFault{Fault: &types.HostCommunication{}, LocalizedMessage: "the host stopped answering"}},
			})
		})
	}
	panic(http.ErrAbortHandler) // the connection drops mid-body
}

// pinnedClient logs in to the SDK, trusting it by its thumbprint.
func (s *nfcSim) pinnedClient() *vim25.Client {
	s.t.Helper()
	ctx := context.Background()
	u := *s.server.URL
	sc := soap.NewClient(&u, false)
	sc.SetThumbprint(u.Host, soap.ThumbprintSHA1(s.server.Certificate()))
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := session.NewManager(c).Login(ctx, s.server.URL.User); err != nil {
		s.t.Fatal(err)
	}
	c.RoundTripper = bent{c.RoundTripper}
	return c
}

// upload puts b on the VM's datastore directory as name.
func (s *nfcSim) upload(name string, b []byte) string {
	s.t.Helper()
	p := s.dir + "/" + name
	if err := s.ds.Upload(context.Background(), bytes.NewReader(b), p, &soap.DefaultUpload); err != nil {
		s.t.Fatal(err)
	}
	return s.ds.Path(p)
}

// setDisk points the VM's first disk at file (a datastore path).
func (s *nfcSim) setDisk(file string) {
	s.t.Helper()
	ctx := context.Background()
	disk := s.disk(nil)
	disk.Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName = file
	// Not EditDevice: its file operation "replace" has vcsim write a new
	// descriptor over the file.
	task, err := s.vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: disk}}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

// disk is the VM's first disk, or the snapshot's.
func (s *nfcSim) disk(snapshot *types.ManagedObjectReference) *types.VirtualDisk {
	s.t.Helper()
	disks := s.devices(snapshot).SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		s.t.Fatal("no disk")
	}
	return disks[0].(*types.VirtualDisk)
}

func (s *nfcSim) devices(snapshot *types.ManagedObjectReference) object.VirtualDeviceList {
	s.t.Helper()
	ctx := context.Background()
	if snapshot == nil {
		d, err := s.vm.Device(ctx)
		if err != nil {
			s.t.Fatal(err)
		}
		return d
	}
	var snap mo.VirtualMachineSnapshot
	if err := property.DefaultCollector(s.c).RetrieveOne(ctx, *snapshot, []string{"config.hardware.device"}, &snap); err != nil {
		s.t.Fatal(err)
	}
	return object.VirtualDeviceList(snap.Config.Hardware.Device)
}

func (s *nfcSim) snapshot(name string) *types.ManagedObjectReference {
	s.t.Helper()
	ctx := context.Background()
	task, err := s.vm.CreateSnapshot(ctx, name, "", false, false)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	ref := info.Result.(types.ManagedObjectReference)
	return &ref
}

// target is the first disk of the VM, or of the snapshot, as Resolve
// gives it. Its capacity is the streams' size: vcsim keeps its own
// disk's (ESXi's stream is as big as the disk).
func (s *nfcSim) target(snapshot *types.ManagedObjectReference) *Disk {
	disk := s.disk(snapshot)
	return &Disk{VM: s.vm.Reference(), VMName: s.vm.Name(), Snapshot: snapshot, Device: disk,
		Label: "Hard disk 1", CapacityBytes: nfcDiskSize, Transport: "nfc"}
}

// client is a session trusting the SDK by its certificate's thumbprint
// only, as --vsphere-thumbprint does: no CA vouches for any host.
func (s *nfcSim) client() *Client {
	s.t.Helper()
	u := *s.server.URL
	u.User = nil
	cfg, err := tlsConfig(u.Hostname(), soap.ThumbprintSHA1(s.server.Certificate()), "")
	if err != nil {
		s.t.Fatal(err)
	}
	return &Client{Vim: s.pinnedClient(), sdk: &u, tls: cfg, log: io.Discard}
}

func (s *nfcSim) lease() (calls []string, percents []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...), append([]int32(nil), s.percents...)
}

// gone: vcsim no longer serves the last lease's device URLs (it drops a
// lease on Complete and Abort, and only then).
func (s *nfcSim) gone() bool {
	s.mu.Lock()
	u := s.upstream[len(s.upstream)-1]
	s.mu.Unlock()
	u = strings.Replace(u, "*", s.server.URL.Host, 1)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := hc.Get(u)
	if err != nil {
		s.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode == http.StatusNotFound
}

// streamOf is content's first size bytes as a streamOptimized VMDK.
func streamOf(t *testing.T, content io.ReaderAt, size int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := vmdk.NewStreamWriter(&b, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: size}, Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, io.NewSectionReader(content, 0, size)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// chainDisk is the content of a generated ESXi chain (base and a
// seSparse delta): what an export of its top reads as.
func chainDisk(t *testing.T, seed uint64, size int64) io.ReaderAt {
	t.Helper()
	c, err := vmdktest.WriteESXiChain(t.TempDir(), "vm", size, vmdktest.ChainOptions{Deltas: 1, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return c.Model
}

// streamImport is what imager does with an export, into memory: the
// stream's grains placed at their offsets, done only at the proven end.
type streamImport struct {
	disk     []byte
	imported int64
	mu       sync.Mutex
	// afterGrain, when set, runs after each grain (to cancel, to panic,
	// to wait for the lease's progress).
	afterGrain func(n int)
}

func (si *streamImport) run(_ context.Context, sr *vmdk.StreamReader) error {
	si.disk = make([]byte, sr.Size())
	for n := 0; ; n++ {
		g, err := sr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		copy(si.disk[g.Offset:], g.Data)
		si.mu.Lock()
		si.imported = g.Offset + int64(len(g.Data))
		si.mu.Unlock()
		if si.afterGrain != nil {
			si.afterGrain(n)
		}
	}
}

func (si *streamImport) done() int64 {
	si.mu.Lock()
	defer si.mu.Unlock()
	return si.imported
}

// sameAs fails t unless got is want's first len(got) bytes, of size.
func sameAs(t *testing.T, got []byte, want io.ReaderAt, size int64) {
	t.Helper()
	if int64(len(got)) != size {
		t.Fatalf("imported %d bytes, want %d", len(got), size)
	}
	w := make([]byte, size)
	if _, err := want.ReadAt(w, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, w) {
		for i := range got {
			if got[i] != w[i] {
				t.Fatalf("imported disk differs from the content written at byte %d", i)
			}
		}
	}
}
