package vmdk

import (
	"bytes"
	"io"
	"testing"
)

// The read paths allocate per request and per stream, never per grain:
// a disk of many grains costs what one of few grains costs, plus the
// buffers a stream keeps for the grains in flight.

// allocStream is a streamOptimized image of grains grains of 64 KiB of
// content, none of them zeros unless zeros (then a quarter are: many
// runs of one grain).
func allocStream(t *testing.T, grains int, zeros bool) []byte {
	t.Helper()
	var img bytes.Buffer
	size := int64(grains) << 16
	w, err := NewStreamWriter(&img, StreamOptions{ImageOptions: ImageOptions{Size: size}, Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	content := mixedNonZero(size)
	if zeros {
		content = mixedContent(9, int(size))
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return img.Bytes()
}

// mixedNonZero is mixedContent without its zero grains.
func mixedNonZero(size int64) []byte {
	b := mixedContent(9, int(size))
	for off := 0; off < len(b); off += 64 << 10 {
		b[off] = 1
	}
	return b
}

// perGrainAllocs is the allocations one more grain costs, from reading
// an image of few grains and one of many with read.
func perGrainAllocs(t *testing.T, few, many int, zeros bool, read func(img []byte) int) float64 {
	t.Helper()
	small, large := allocStream(t, few, zeros), allocStream(t, many, zeros)
	var got int
	a := testing.AllocsPerRun(3, func() { got = read(small) })
	if got != few {
		t.Fatalf("read %d grains of %d", got, few)
	}
	b := testing.AllocsPerRun(3, func() { got = read(large) })
	if got != many {
		t.Fatalf("read %d grains of %d", got, many)
	}
	t.Logf("%.0f allocations for %d grains, %.0f for %d", a, few, b, many)
	return (b - a) / float64(many-few)
}

// TestWithinMeasuresStreamReaderAllocs: StreamReader reuses its grains'
// buffers (compressed and inflated), its marker sector and its slots.
func TestWithinMeasuresStreamReaderAllocs(t *testing.T) {
	per := perGrainAllocs(t, 64, 512, false, func(img []byte) int {
		s, err := NewStreamReader(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		n := 0
		for {
			_, err := s.Next()
			if err == io.EOF {
				return n
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
	})
	// The slots' buffers are made as slots come into use (at most 64
	// allocations, 0.14 a grain here); one allocation a grain is 1.
	if per > 0.5 {
		t.Fatalf("%.2f allocations per grain, want none", per)
	}
}

// TestWithinMeasuresCompressedReadAtAllocs: ReadAt over a stream image
// allocates per request (the request's grain table entries, its
// workers), not per grain, also for grains between unallocated ones,
// which are read one by one.
func TestWithinMeasuresCompressedReadAtAllocs(t *testing.T) {
	buf := make([]byte, 4<<20)
	per := perGrainAllocs(t, 64, 512, true, func(img []byte) int {
		d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for off := int64(0); off < d.Size(); off += int64(len(buf)) {
			if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
		return int(d.Size() >> 16)
	})
	// 64 grains to a request: a few allocations a request are 0.1 a
	// grain; one allocation a grain is 1.
	if per > 0.5 {
		t.Fatalf("%.2f allocations per grain, want a few per 64-grain request", per)
	}
}
