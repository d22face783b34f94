package source

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// tinyChunks streams an OVA whose disk is n one-byte chunks
// (ovf:chunkSize="1"), then, when mf is set, a manifest of the descriptor (its digest right).
func tinyChunks(n int, mf bool) io.Reader {
	env := fmt.Sprintf(`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.img" ovf:id="f1" ovf:chunkSize="1" ovf:size="%d"/></References>
<DiskSection><Disk ovf:diskId="vmdisk1" ovf:fileRef="f1"/></DiskSection></Envelope>`, n)
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		add := func(name string, b []byte) {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		add("x.ovf", []byte(env))
		for i := range n {
			add(chunkName("d.img", i), []byte{byte(i)})
		}
		if mf {
			add("x.mf", fmt.Appendf(nil, "SHA256(x.ovf)= %x\n", sha256.Sum256([]byte(env))))
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// An OVA of many tiny chunks and no manifest before them keeps no more
// than a manifest could list in memory (the digests of each chunk read,
// kept for a manifest that may still come): twice that many chunks
// leave the heap as it was. A manifest after them is refused, as it could
// not list them all.
func TestHostileOVATinyChunks(t *testing.T) {
	n := 2 * maxListed
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	o, err := OpenOVA(context.Background(), tinyChunks(n, false))
	if err != nil {
		t.Fatal(err)
	}
	_, r, _, err := o.Next(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, r)
	if err != nil || got != int64(n) {
		t.Fatalf("%d bytes read: %v", got, err)
	}
	if err := o.Finish(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Unbounded, each chunk's name and three digests stay: ~570 bytes.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > int64(n)*64 {
		t.Fatalf("%d one-byte chunks: the heap grew by %d bytes (%d a chunk)", n, grew, grew/int64(n))
	}
	runtime.KeepAlive(o)

	o, err = OpenOVA(context.Background(), tinyChunks(maxListed+1, true))
	if err != nil {
		t.Fatal(err)
	}
	if _, r, _, err = o.Next(nil); err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if err == nil {
		err = o.Finish()
	}
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "more than a manifest") {
		t.Fatalf("a manifest after %d members: %v", maxListed+1, err)
	}
}

// A read into an empty buffer returns at once, as io.Reader says, and
// the disk still reads whole after it.
func TestOVAEmptyRead(t *testing.T) {
	o, err := OpenOVA(context.Background(), bytes.NewReader(tarOf([2]string{"x.ovf", oneDiskOVF}, [2]string{"d.vmdk", "disk bytes"})))
	if err != nil {
		t.Fatal(err)
	}
	_, r, _, err := o.Next(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		n, err := r.Read(nil)
		if n != 0 {
			err = fmt.Errorf("%d bytes", n)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read(nil) has not returned") // it spun on the tar reader's (0, nil)
	}
	if b, err := io.ReadAll(r); err != nil || string(b) != "disk bytes" {
		t.Fatalf("%q %v", b, err)
	}
}
