package source

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
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

// ovf:compression="gzip" marks the member gzip; identity (or none) does
// not; other compressions are refused as unsupported.
func TestOVACompression(t *testing.T) {
	member := gzipOf(t, []byte("disk bytes"))
	for compression, gz := range map[string]bool{"": false, "identity": false, "gzip": true} {
		r, disk, n, err := OpenOVADisk(bytes.NewReader(ova(compression, member)), "")
		if err != nil {
			t.Fatalf("%q: %v", compression, err)
		}
		got, _ := io.ReadAll(r)
		if disk.Gzip != gz || disk.Href != "d.vmdk" || n != int64(len(member)) || !bytes.Equal(got, member) {
			t.Fatalf("%q: %+v, %d bytes", compression, disk, n)
		}
	}
	if _, _, _, err := OpenOVADisk(bytes.NewReader(ova("bzip2", member)), ""); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bzip2: %v", err)
	}
}
