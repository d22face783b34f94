package source

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func ova(compression string, disk []byte) []byte {
	ovf := fmt.Sprintf(`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.vmdk" ovf:id="f1" ovf:compression="%s"/></References>
<DiskSection><Disk ovf:diskId="vmdisk1" ovf:fileRef="f1"/></DiskSection></Envelope>`, compression)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range [][2][]byte{{[]byte("x.ovf"), []byte(ovf)}, {[]byte("d.vmdk"), disk}} {
		tw.WriteHeader(&tar.Header{Name: string(m[0]), Mode: 0o644, Size: int64(len(m[1])), Typeflag: tar.TypeReg})
		tw.Write(m[1])
	}
	tw.Close()
	return buf.Bytes()
}

// openOVADisk opens an OVA and the disk sel picks.
func openOVADisk(b []byte, sel string) (io.Reader, *OVADisk, int64, error) {
	o, err := OpenOVA(context.Background(), bytes.NewReader(b))
	if err != nil {
		return nil, nil, 0, err
	}
	d, err := o.Pick(sel)
	if err != nil {
		return nil, nil, 0, err
	}
	_, r, n, err := o.Next(d)
	return r, d, n, err
}

// ovf:compression="gzip" marks the member gzip; identity (or none) does
// not; other compressions are refused as unsupported.
func TestOVACompression(t *testing.T) {
	member := gzipOf(t, []byte("disk bytes"))
	for compression, gz := range map[string]bool{"": false, "identity": false, "gzip": true} {
		r, disk, n, err := openOVADisk(ova(compression, member), "")
		if err != nil {
			t.Fatalf("%q: %v", compression, err)
		}
		got, _ := io.ReadAll(r)
		if disk.Gzip != gz || disk.Href != "d.vmdk" || n != int64(len(member)) || !bytes.Equal(got, member) {
			t.Fatalf("%q: %+v, %d bytes", compression, disk, n)
		}
	}
	if _, _, _, err := openOVADisk(ova("bzip2", member), ""); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bzip2: %v", err)
	}
}

// tarOf is a tar of the members in order.
func tarOf(members ...[2]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		tw.WriteHeader(&tar.Header{Name: m[0], Mode: 0o644, Size: int64(len(m[1])), Typeflag: tar.TypeReg})
		tw.Write([]byte(m[1]))
	}
	tw.Close()
	return buf.Bytes()
}

const oneDiskOVF = `<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.vmdk" ovf:id="f1"/></References>
<DiskSection><Disk ovf:diskId="vmdisk1" ovf:fileRef="f1"/></DiskSection></Envelope>`

// A disk read only in part (a stream's reader stops at its end-of-stream
// marker) is still checked against the manifest: Finish reads the rest
// of it through its hash.
func TestOVAFinishChecksUnreadRest(t *testing.T) {
	disk := strings.Repeat("disk bytes ", 1000)
	mf := fmt.Sprintf("SHA256(x.ovf)= %x\nSHA256(d.vmdk)= %x\n", sha256.Sum256([]byte(oneDiskOVF)), sha256.Sum256([]byte(disk)))
	for name, want := range map[string]error{"d.vmdk": nil, "altered": ErrChecksum} {
		member := disk
		if name == "altered" {
			member = disk[:len(disk)-1] + "X"
		}
		o, err := OpenOVA(context.Background(), bytes.NewReader(tarOf([2]string{"x.ovf", oneDiskOVF}, [2]string{"x.mf", mf}, [2]string{"d.vmdk", member})))
		if err != nil {
			t.Fatal(err)
		}
		_, r, _, err := o.Next(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		if err := o.Finish(); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: Finish: %v, want %v", name, err, want)
		}
	}
}

// Pick takes a disk by its index, diskId or file name, the first by
// default; a selector that names two disks (one's index and another's
// diskId, one's diskId and another's file name) is refused naming both.
func TestOVAPickAmbiguous(t *testing.T) {
	disks, err := parseEnvelope([]byte(`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="a.vmdk" ovf:id="f1"/><File ovf:href="b.vmdk" ovf:id="f2"/><File ovf:href="c.vmdk" ovf:id="f3"/></References>
<DiskSection><Disk ovf:diskId="1" ovf:fileRef="f1"/><Disk ovf:diskId="c.vmdk" ovf:fileRef="f2"/><Disk ovf:diskId="z" ovf:fileRef="f3"/></DiskSection></Envelope>`))
	if err != nil {
		t.Fatal(err)
	}
	for sel, want := range map[string]int{"": 0, "0": 0, "a.vmdk": 0, "b.vmdk": 1, "2": 2, "z": 2} {
		if d, err := pick(disks, sel); err != nil || d != disks[want] {
			t.Errorf("%q: %v %v, want disk %d", sel, d, err, want)
		}
	}
	for sel, both := range map[string][2]string{"1": {"0=1(a.vmdk)", "1=c.vmdk(b.vmdk)"}, "c.vmdk": {"1=c.vmdk(b.vmdk)", "2=z(c.vmdk)"}} {
		_, err := pick(disks, sel)
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), both[0]) || !strings.Contains(err.Error(), both[1]) {
			t.Errorf("%q: %v", sel, err)
		}
	}
}
