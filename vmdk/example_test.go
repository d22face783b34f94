package vmdk_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// tempDir is a scratch directory for an example (removed by the caller).
func tempDir() string {
	dir, err := os.MkdirTemp("", "vmdk-example")
	if err != nil {
		log.Fatal(err)
	}
	return dir
}

func ExampleCreate() {
	dir := tempDir()
	defer os.RemoveAll(dir)

	path := filepath.Join(dir, "disk.vmdk")
	err := vmdk.Create(path, vmdk.CreateOptions{
		Subformat:    vmdk.TwoGbMaxExtentSparse,
		ImageOptions: vmdk.ImageOptions{Size: 5 << 30, AdapterType: "lsilogic"},
	})
	if err != nil {
		log.Fatal(err)
	}
	d, err := vmdk.Open(path, vmdk.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	fmt.Println(d.CreateType(), d.Size(), d.Descriptor().DDBValue("ddb.adapterType"))
	for _, e := range d.Extents() {
		fmt.Println(filepath.Base(e.File), e.Size, e.Format)
	}
	// Output:
	// twoGbMaxExtentSparse 5368709120 lsilogic
	// disk-s001.vmdk 2147483648 KDMV
	// disk-s002.vmdk 2147483648 KDMV
	// disk-s003.vmdk 1073741824 KDMV
}

func ExampleOpen() {
	dir := tempDir()
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.vmdk")
	if err := vmdk.Create(path, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: 1 << 20}}); err != nil {
		log.Fatal(err)
	}

	// Write through a read-write Disk; Flush makes it durable.
	w, err := vmdk.Open(path, vmdk.Options{ReadWrite: true})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("hello, grain"), 4096); err != nil {
		log.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	w.Close()

	// Read it back: a Disk is an io.ReaderAt over the guest's view.
	d, err := vmdk.Open(path, vmdk.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 12)
	if _, err := d.ReadAt(buf, 4096); err != nil {
		log.Fatal(err)
	}
	m, err := d.BlockStatus(0, d.Size())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %q; the first %d bytes allocated: %v\n", d.CreateType(), buf, m.Length, m.Allocated)
	// Output:
	// monolithicSparse: "hello, grain"; the first 65536 bytes allocated: true
}

func ExampleNewStreamWriter() {
	// A raw disk of 1 MiB with a boot sector: the stream stores only the
	// grain that holds it, compressed.
	raw := make([]byte, 1<<20)
	copy(raw[510:], "\x55\xaa")

	var out bytes.Buffer
	w, err := vmdk.NewStreamWriter(&out, vmdk.StreamOptions{
		ImageOptions:   vmdk.ImageOptions{Size: int64(len(raw))},
		ExtentFileName: "upload.vmdk",
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(raw)); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	// The stream is a self-contained image: OpenReaderAt reads it back.
	d, err := vmdk.OpenReaderAt(bytes.NewReader(out.Bytes()), int64(out.Len()), "upload.vmdk")
	if err != nil {
		log.Fatal(err)
	}
	sig := make([]byte, 2)
	if _, err := d.ReadAt(sig, 510); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, %d bytes, %s, signature %x\n", d.CreateType(), d.Size(), d.Descriptor().Extents[0].File, sig)
	// Output:
	// streamOptimized, 1048576 bytes, upload.vmdk, signature 55aa
}

func ExampleNewStreamReader() {
	// A stream with two grains of content, as an HTTP body would carry it.
	var stream bytes.Buffer
	w, err := vmdk.NewStreamWriter(&stream, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: 1 << 20}})
	if err != nil {
		log.Fatal(err)
	}
	grain := make([]byte, 64<<10)
	copy(grain, "first")
	w.WriteAt(grain, 0)
	copy(grain, "second")
	w.WriteAt(grain, 256<<10)
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	r, err := vmdk.NewStreamReader(&stream)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	fmt.Println("size", r.Size())
	for {
		g, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		// Grains come in stream order; ranges without one read as zeros.
		fmt.Printf("grain at %d: %d bytes, %q\n", g.Offset, len(g.Data), bytes.TrimRight(g.Data, "\x00"))
	}
	// Output:
	// size 1048576
	// grain at 0: 65536 bytes, "first"
	// grain at 262144: 65536 bytes, "second"
}
