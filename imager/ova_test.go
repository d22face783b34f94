package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// compressedOVA is an OVA of one disk whose File says ovf:compression.
func compressedOVA(compression string, disk []byte) []byte {
	ovf := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:compression="%s"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="1" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
</Envelope>`, compression)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		data []byte
	}{{"vm.ovf", []byte(ovf)}, {"vm-disk1.vmdk", disk}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg})
		tw.Write(m.data)
	}
	tw.Close()
	return buf.Bytes()
}

// An OVA's disk member may be gzip-compressed (ovf:compression="gzip"):
// it imports from a file and over HTTP. A member that says gzip but is
// not, and a compression imager does not read, are refused.
func TestImportOVAGzipMember(t *testing.T) {
	f := getFixture(t)
	ovas := map[string][]byte{
		"gzip.ova":  compressedOVA("gzip", gzipBytes(t, f.stream)),
		"liar.ova":  compressedOVA("gzip", f.stream),
		"bzip2.ova": compressedOVA("bzip2", f.stream),
	}
	_, ts := newServer(t, f, func(s *server) {
		for name, b := range ovas {
			s.files[name] = b
		}
	})
	local := t.TempDir()
	for name, b := range ovas {
		os.WriteFile(filepath.Join(local, name), b, 0o644)
	}
	for _, base := range []string{local, ts.URL} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, base+"/gzip.ova")
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
		if r.CreateType != "streamOptimized" {
			t.Fatalf("result %+v", r)
		}
		for name, reason := range map[string]string{"liar.ova": jobapi.ReasonInvalidImage, "bzip2.ova": jobapi.ReasonUnsupportedImage} {
			dir := t.TempDir()
			code, r, _, _ := runImportTest(t, "--target", dir, base+"/"+name)
			wantFailed(t, code, r, jobapi.ExitPermanent, reason)
			emptyDir(t, dir)
		}
	}
}
