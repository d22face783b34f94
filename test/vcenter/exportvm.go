package vcenter

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// exportVM gives vcsim the ExportVm method it lacks (it answers
// NotImplemented), as ESXi has it: a powered-off VM's disks as they are,
// over an NFC lease; a powered-on VM refused with InvalidPowerState.
//
// vcsim's ExportSnapshot reads only the snapshot's devices and its VM, so
// an ExportVm call is served as an ExportSnapshot of a snapshot object
// holding the VM's current devices: one per VM, put in vcsim's inventory
// but in no VM's snapshot tree.
type exportVM struct {
	svc   *simulator.Service
	admin func() *vim25.Client

	mu    sync.Mutex
	snaps map[string]*simulator.VirtualMachineSnapshot // by VM moref
}

// exportVMCall finds an ExportVm request's VM; govmomi and pyVmomi both
// send <ExportVm xmlns="urn:vim25"><_this type="VirtualMachine">vm-N</_this></ExportVm>.
var exportVMCall = regexp.MustCompile(`<ExportVm(?:\s[^>]*)?>\s*<_this(?:\s[^>]*)?>([^<]+)</_this>\s*</ExportVm>`)

func newExportVM(svc *simulator.Service, sdkPath string, admin func() *vim25.Client) *exportVM {
	e := &exportVM{svc: svc, admin: admin, snaps: map[string]*simulator.VirtualMachineSnapshot{}}
	// Go's ServeMux prefers these to vcsim's method-less SDK patterns.
	svc.Handle("POST "+sdkPath, e)
	svc.Handle("POST "+sdkPath+"/vimService", e)
	return e
}

// maxSOAPRequest bounds what is read of a request to look for ExportVm;
// the SDK's requests are a few KiB.
const maxSOAPRequest = 16 << 20

func (e *exportVM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSOAPRequest))
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	m := exportVMCall.FindSubmatchIndex(body)
	if m == nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		e.svc.ServeSDK(w, r)
		return
	}
	vm := string(body[m[2]:m[3]])
	snap, state, err := e.snapshotOf(r.Context(), vm)
	if err != nil {
		writeFault(w, fmt.Sprintf("The object 'vim.VirtualMachine:%s' has already been deleted or has not been completely created", vm),
			fmt.Sprintf(`<ManagedObjectNotFoundFault xmlns="urn:vim25" xsi:type="ManagedObjectNotFound"><obj type="VirtualMachine">%s</obj></ManagedObjectNotFoundFault>`, xmlText(vm)))
		return
	}
	if state != types.VirtualMachinePowerStatePoweredOff {
		writeFault(w, fmt.Sprintf("The attempted operation cannot be performed in the current state (%s).", state),
			fmt.Sprintf(`<InvalidPowerStateFault xmlns="urn:vim25" xsi:type="InvalidPowerState"><requestedState>poweredOff</requestedState><existingState>%s</existingState></InvalidPowerStateFault>`, state))
		return
	}
	call := fmt.Sprintf(`<ExportSnapshot xmlns="urn:vim25"><_this type="VirtualMachineSnapshot">%s</_this></ExportSnapshot>`, xmlText(snap))
	r.Body = io.NopCloser(bytes.NewReader(append(append(bytes.Clone(body[:m[0]]), call...), body[m[1]:]...)))
	r.ContentLength = -1
	rec := httptest.NewRecorder()
	e.svc.ServeSDK(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(bytes.ReplaceAll(rec.Body.Bytes(), []byte("ExportSnapshotResponse"), []byte("ExportVmResponse")))
}

// snapshotOf points VM vm's export snapshot at its current devices and
// returns its moref and the VM's power state.
func (e *exportVM) snapshotOf(ctx context.Context, vm string) (string, types.VirtualMachinePowerState, error) {
	c := e.admin()
	if c == nil {
		return "", "", fmt.Errorf("vcenter: ExportVm before the fixture's session: %w", ErrSetup)
	}
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vm}
	var mvm mo.VirtualMachine
	if err := property.DefaultCollector(c).RetrieveOne(ctx, ref, []string{"config.hardware.device", "runtime.powerState"}, &mvm); err != nil {
		return "", "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	snap, ok := e.snaps[vm]
	if !ok {
		snap = &simulator.VirtualMachineSnapshot{}
		snap.Vm = ref
		e.svc.Context.Map.Put(snap)
		e.snaps[vm] = snap
	}
	// A fresh copy each call: the property collector's, not vcsim's own.
	e.svc.Context.Map.WithLock(e.svc.Context, snap, func() {
		snap.Config = types.VirtualMachineConfigInfo{Hardware: types.VirtualHardware{Device: mvm.Config.Hardware.Device}}
	})
	return snap.Self.Value, mvm.Runtime.PowerState, nil
}

// writeFault answers a SOAP call with a vSphere fault, as vcsim encodes
// them.
func writeFault(w http.ResponseWriter, msg, detail string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail>%s</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		xmlText(msg), detail)
}

func xmlText(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
