package source

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"testing"
)

// FuzzOVA: whatever an archive holds, reading it as an OVA (every disk,
// then the rest) ends in a result or an error, never a panic, and a disk
// read to its end reads no more than its members hold.
func FuzzOVA(f *testing.F) {
	env := `<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.vmdk" ovf:id="f1" ovf:chunkSize="4" ovf:size="10"/><File ovf:href="e.vmdk" ovf:id="f2"/></References>
<DiskSection><Disk ovf:diskId="a" ovf:fileRef="f1"/><Disk ovf:diskId="b" ovf:fileRef="f2"/></DiskSection></Envelope>`
	mf := fmt.Sprintf("SHA1(x.ovf)= %x\nSHA1(e.vmdk)= %x\n", sha1.Sum([]byte(env)), sha1.Sum([]byte("disk e")))
	f.Add(tarOf([2]string{"x.ovf", env}, [2]string{"d.vmdk.000000000", "0123"}, [2]string{"d.vmdk.000000001", "4567"},
		[2]string{"d.vmdk.000000002", "89"}, [2]string{"e.vmdk", "disk e"}))
	f.Add(tarOf([2]string{"x.ovf", env}, [2]string{"x.mf", mf}, [2]string{"e.vmdk", "disk e"}, [2]string{"d.vmdk.000000000", "0123"}))
	f.Add(tarOf([2]string{"x.ovf", env}, [2]string{"d.vmdk.000000001", "4567"}, [2]string{"x.mf", "SHA256(x.ovf)= 00"}))
	f.Add(tarOf([2]string{"x.ovf", oneDiskOVF}, [2]string{"d.vmdk", "disk"}, [2]string{"x.mf", mf}))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := OpenOVA(context.Background(), bytes.NewReader(b))
		if err != nil {
			return
		}
		for {
			_, r, size, err := o.Next(nil)
			if err != nil {
				break
			}
			n, err := io.Copy(io.Discard, r)
			if err == nil && size >= 0 && n != size {
				t.Fatalf("read %d bytes of a disk of %d", n, size)
			}
			if n > int64(len(b)) {
				t.Fatalf("read %d bytes out of an archive of %d", n, len(b))
			}
		}
		o.Finish()
	})
}
