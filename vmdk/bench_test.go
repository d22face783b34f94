package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Read-throughput benchmarks on ~64 MiB of mixed content (a quarter zeros, a
// quarter random, half text-like, in 64 KiB pieces) written by qemu-img:
//
//	go test ./vmdk -run '^$' -bench . -benchtime 3x
//
// MB/s is guest bytes per second (zeros included). hack/bench-convert.sh
// compares the whole imager convert against qemu-img on 1 GiB disks.

const (
	benchDiskBytes = 64 << 20
	benchChunk     = 4 << 20 // what imager convert reads per step
)

// benchImage writes the mixed-content disk as subformat sf in a fresh
// b.TempDir() and returns the image's path.
func benchImage(b *testing.B, sf string) string {
	b.Helper()
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "src.raw"), mixedContent(42, benchDiskBytes))
	sh(b, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sf, "src.raw", "d.vmdk")
	if err := os.Remove(filepath.Join(dir, "src.raw")); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(dir, "d.vmdk")
}

// benchReadAt opens the image each iteration and reads the whole disk
// sequentially through ReadAt in benchChunk pieces, as imager convert does.
func benchReadAt(b *testing.B, sf string) {
	img := benchImage(b, sf)
	buf := make([]byte, benchChunk)
	b.SetBytes(benchDiskBytes)
	b.ReportAllocs()
	for b.Loop() {
		d, err := Open(img, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if d.Size() != benchDiskBytes {
			b.Fatalf("size %d, want %d", d.Size(), benchDiskBytes)
		}
		for off := int64(0); off < d.Size(); off += benchChunk {
			if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatalf("ReadAt(%d): %v", off, err)
			}
		}
		d.Close()
	}
}

func BenchmarkReadAtMonolithicSparse(b *testing.B) { benchReadAt(b, "monolithicSparse") }
func BenchmarkReadAtMonolithicFlat(b *testing.B)   { benchReadAt(b, "monolithicFlat") }
func BenchmarkReadAtStreamOptimized(b *testing.B)  { benchReadAt(b, "streamOptimized") }

// BenchmarkStreamReader inflates the whole stream image from memory with
// NewStreamReader/Next.
func BenchmarkStreamReader(b *testing.B) {
	data := readFileT(b, benchImage(b, "streamOptimized"))
	b.SetBytes(benchDiskBytes)
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewStreamReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		var got int64
		for {
			g, err := s.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			got += int64(len(g.Data))
		}
		s.Close()
		if got == 0 || got > benchDiskBytes {
			b.Fatalf("stream returned %d bytes of grains", got)
		}
	}
}

// BenchmarkStreamWriter compresses the mixed-content disk into a
// streamOptimized image (output discarded).
func BenchmarkStreamWriter(b *testing.B) {
	raw := mixedContent(42, benchDiskBytes)
	b.SetBytes(benchDiskBytes)
	b.ReportAllocs()
	for b.Loop() {
		w, err := NewStreamWriter(io.Discard, StreamOptions{ImageOptions: ImageOptions{Size: benchDiskBytes}})
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(raw); off += benchChunk {
			if _, err := w.Write(raw[off : off+benchChunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteSparse writes the mixed-content disk into a new
// monolithicSparse image through WriteAt, then Flush.
func BenchmarkWriteSparse(b *testing.B) {
	raw := mixedContent(42, benchDiskBytes)
	dir := b.TempDir()
	b.SetBytes(benchDiskBytes)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		p := filepath.Join(dir, fmt.Sprintf("w%d.vmdk", n))
		if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: benchDiskBytes}}); err != nil {
			b.Fatal(err)
		}
		d, err := Open(p, Options{ReadWrite: true})
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(raw); off += 64 << 10 {
			grain := raw[off : off+64<<10]
			if isZero(grain) {
				continue
			}
			if _, err := d.WriteAt(grain, int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		if err := d.Flush(); err != nil {
			b.Fatal(err)
		}
		d.Close()
		os.Remove(p)
	}
}

// BenchmarkInflateGrain inflates the bench disk's non-zero grains,
// compressed at the stream writer's default level, on one goroutine: the
// per-core cost every compressed read path pays.
func BenchmarkInflateGrain(b *testing.B) {
	raw := mixedContent(42, 16<<20)
	var grains [][]byte
	for off := 0; off < len(raw); off += 64 << 10 {
		if g := raw[off : off+64<<10]; !isZero(g) {
			grains = append(grains, zlibOf(b, g))
		}
	}
	dst := make([]byte, 64<<10)
	b.SetBytes(int64(len(grains)) << 16)
	b.ReportAllocs()
	for b.Loop() {
		for _, g := range grains {
			if err := inflate(dst, g); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkBlockStatusSparse walks the block status of a 64 GiB
// monolithicSparse disk with a grain written every 64 MiB (1024 grains,
// 1024 grain tables): lookup cost goes with what is allocated. MB/s is
// virtual bytes mapped per second.
func BenchmarkBlockStatusSparse(b *testing.B) {
	const size = 64 << 30
	p := filepath.Join(b.TempDir(), "big.vmdk")
	if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: size}}); err != nil {
		b.Fatal(err)
	}
	d, err := Open(p, Options{ReadWrite: true})
	if err != nil {
		b.Fatal(err)
	}
	grain := bytes.Repeat([]byte{7}, 64<<10)
	for off := int64(0); off < size; off += 64 << 20 {
		if _, err := d.WriteAt(grain, off+off/(64<<20)%7*(64<<10)); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	if d, err = Open(p, Options{}); err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		runs := 0
		for off := int64(0); off < size; {
			m, err := d.BlockStatus(off, size-off)
			if err != nil {
				b.Fatal(err)
			}
			off += m.Length
			runs++
		}
		if runs != 2*1024 {
			b.Fatalf("%d runs, want %d", runs, 2*1024)
		}
	}
}

// BenchmarkIsZero is the zero test the writers run on each grain, over
// the bench disk's content (zero grains and data grains, whose first
// bytes usually differ).
func BenchmarkIsZero(b *testing.B) {
	raw := mixedContent(42, 16<<20)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for off := 0; off < len(raw); off += 64 << 10 {
			if isZero(raw[off : off+64<<10]) {
				n++
			}
		}
		if n == 0 {
			b.Fatal("no zero grains")
		}
	}
}
