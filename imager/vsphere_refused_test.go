package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// soapFault answers a SOAP call with a vSphere fault whose detail is
// detail, as vCenter encodes them.
func soapFault(w http.ResponseWriter, msg, detail string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail>%s</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, msg, detail)
}

// An export the server refuses with a fault every SDK call shares the
// meaning of: a privilege the user lacks is Unauthorized (permanent: the
// controller would retry it for nothing), a snapshot gone SourceNotFound;
// not a busy server's LeaseFailed.
func TestImportVSphereExportRefused(t *testing.T) {
	f, creds := startVSphereFixture(t, vcenter.Options{Seed: 58, Size: 1<<20 + 4096, Deltas: 1})
	on := f.VMs[1]
	for _, c := range []struct {
		name, msg, detail string
		code              int
		reason            string
		want              string
	}{
		{"NoPermission", "Permission to perform this operation was denied.",
			`<NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="VirtualMachineSnapshot">x</object><privilegeId>VirtualMachine.Provisioning.ExportVm</privilegeId></NoPermissionFault>`,
			jobapi.ExitPermanent, jobapi.ReasonUnauthorized, "the user needs the privilege VirtualMachine.Provisioning.ExportVm"},
		{"ManagedObjectNotFound", "The object has already been deleted or has not been completely created",
			`<ManagedObjectNotFoundFault xmlns="urn:vim25" xsi:type="ManagedObjectNotFound"><obj type="VirtualMachineSnapshot">x</obj></ManagedObjectNotFoundFault>`,
			jobapi.ExitPermanent, jobapi.ReasonSourceNotFound, "not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sdk, pin := sdkProxy(t, f, func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
					return false
				}
				b, err := io.ReadAll(r.Body)
				if err != nil {
					t.Error(err)
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
				if !bytes.Contains(b, []byte("<ExportSnapshot")) {
					return false
				}
				soapFault(w, c.msg, c.detail)
				return true
			})
			target := t.TempDir()
			code, r, _, _ := runImportTest(t, "--target", target, "--retries", "0", "--vsphere-url", sdk, "--credentials-dir", creds,
				"--vsphere-thumbprint", pin, "--vsphere-moref", on.MoRef, "--vsphere-snapshot", on.Snapshots[0].MoRef, "--vsphere-transport", "nfc")
			wantFailed(t, code, r, c.code, c.reason)
			if !strings.Contains(r.Message, c.want) {
				t.Fatalf("message %q, want %q in it", r.Message, c.want)
			}
			emptyDir(t, target)
		})
	}
}
