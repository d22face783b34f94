package main

import (
	"io"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// jobapi.VSphereArgs, as the controllers build it, arrives whole through
// import's own flags, with no source argument.
func TestImportArgsParseVSphere(t *testing.T) {
	for _, v := range []jobapi.VSphereArgs{
		{URL: "https://vc.example/sdk", Thumbprint: "AB:CD", MoRef: "vm-42", DiskLabel: "Hard disk 2", Snapshot: "s1", Transport: jobapi.TransportNFC},
		{URL: "https://esxi.example", UUID: "4213a0b1-0000-0000-0000-000000000001", DiskIndex: 2, Transport: jobapi.TransportDatastore},
		{URL: "https://vc.example/sdk", InventoryPath: "/DC0/vm/folder/vm one", Transport: jobapi.TransportDatastore},
	} {
		in := jobapi.ImportArgs{ResultFile: jobapi.ResultPath, Target: "/target", TargetFormat: "raw", CredentialsDir: "/etc/vmdkpop/credentials", VSphere: &v}
		argv := in.Argv()
		j, _, err := parseImport(argv[1:], io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", argv, err)
		}
		if j.vsphere == nil || *j.vsphere != v {
			t.Fatalf("%q arrived as %+v, want %+v", argv, j.vsphere, v)
		}
		if j.http.CredsDir != in.CredentialsDir || j.target != in.Target {
			t.Fatalf("%q: credentials %q, target %q", argv, j.http.CredsDir, j.target)
		}
	}
}

// What cannot go with a vSphere source is a usage error, before any
// connection.
func TestImportVSphereUsage(t *testing.T) {
	url := "https://127.0.0.1:1/sdk"
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "https://other/vm.vmdk"}, "no source argument"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--checksum", "sha256:" + strings.Repeat("ab", 32)}, "--checksum does not apply"},
		{[]string{"--vsphere-moref", "vm-1", "https://other/vm.vmdk"}, "--vsphere-moref applies with --vsphere-url"},
		{[]string{"--vsphere-url", url}, "exactly one of --vsphere-uuid"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--vsphere-path", "/DC0/vm/x"}, "exactly one of --vsphere-uuid"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--vsphere-disk-label", "Hard disk 1", "--vsphere-disk-index", "0"}, "give one"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--vsphere-transport", "vddk"}, "want datastore or nfc"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--vsphere-disk-index", "-1"}, "want 0 or more"},
		{[]string{"--vsphere-url", url, "--vsphere-moref", "vm-1", "--source-format", "ova"}, "do not apply to a vSphere source"},
		{nil, "want 1 argument(s), got 0"},
	} {
		args := append([]string{"--target", t.TempDir()}, tc.args...)
		code, r, _, _ := runImportTest(t, args...)
		wantFailed(t, code, r, jobapi.ExitUsage, jobapi.ReasonInvalidArguments)
		if !strings.Contains(r.Message, tc.msg) {
			t.Fatalf("%q: message %q, want %q in it", tc.args, r.Message, tc.msg)
		}
	}
}
