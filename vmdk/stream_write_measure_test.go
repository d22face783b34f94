package vmdk

import (
	"bytes"
	stdzlib "compress/zlib"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zlib"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// TestWithinMeasuresStreamWriterAllocs: the stream writer allocates
// nothing per grain (its jobs, buffers and zlib writers are made once):
// 8 times the grains cost fewer than one allocation per 16 extra grains.
func TestWithinMeasuresStreamWriterAllocs(t *testing.T) {
	raw := logDisk(3, 48<<20)
	allocs := func(n int) float64 {
		data := raw[:n]
		return testing.AllocsPerRun(2, func() {
			w, err := NewStreamWriter(io.Discard, StreamOptions{ImageOptions: ImageOptions{Size: int64(n)}, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	const grain = 64 << 10
	small, large := allocs(6<<20), allocs(48<<20)
	grains := float64(48<<20-6<<20) / grain
	if extra := large - small; extra > grains/16 {
		t.Errorf("%.0f grains more cost %.0f allocations more (%.0f for 6 MiB, %.0f for 48 MiB): want none per grain", grains, extra, small, large)
	}
	t.Logf("allocations: %.0f for 6 MiB, %.0f for 48 MiB", small, large)
}

// TestStreamWriterZlibFraming: the writer's own zlib framing (header and
// Adler-32 around klauspost's deflate) gives, at every level, the bytes
// zlib.Writer gives, which every inflater (and ours) reads back.
func TestStreamWriterZlibFraming(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	text, random := make([]byte, 64<<10), make([]byte, 64<<10)
	vmdktest.LogLines(r, text)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	grains := [][]byte{text, random, bytes.Repeat([]byte{7}, 64<<10), text[:1000]}
	for level := 1; level <= 9; level++ {
		for i, g := range grains {
			todo := make(chan *grainJob, 1)
			j := &grainJob{data: g, done: make(chan struct{}, 1)}
			todo <- j
			close(todo)
			compressGrains(todo, level)
			if j.err != nil {
				t.Fatal(j.err)
			}
			var want bytes.Buffer
			zw, err := zlib.NewWriterLevel(&want, level)
			if err != nil {
				t.Fatal(err)
			}
			zw.Write(g)
			zw.Close()
			if !bytes.Equal(j.out.Bytes(), want.Bytes()) {
				t.Errorf("level %d grain %d: %d bytes differ from zlib.Writer's %d", level, i, j.out.Len(), want.Len())
			}
			zr, err := stdzlib.NewReader(bytes.NewReader(j.out.Bytes()))
			if err != nil {
				t.Fatalf("level %d grain %d: %v", level, i, err)
			}
			got, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(got, g) {
				t.Fatalf("level %d grain %d: compress/zlib reads %d bytes, %v", level, i, len(got), err)
			}
		}
	}
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct{ n int }

var errOutput = errors.New("output device gone")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, errOutput
	}
	f.n -= len(p)
	return len(p), nil
}

// TestStreamWriterOutputFails: when the output fails, a later Write
// returns its error instead of taking the rest of the disk (or hanging
// with every grain job held), and Close returns it too.
func TestStreamWriterOutputFails(t *testing.T) {
	raw := logDisk(5, 64<<20)
	for _, workers := range []int{1, 4} {
		done := make(chan error, 1)
		go func() {
			w, err := NewStreamWriter(&failAfter{n: 3 << 20}, StreamOptions{ImageOptions: ImageOptions{Size: int64(len(raw))}, Workers: workers})
			if err != nil {
				done <- err
				return
			}
			var werr error
			for off := 0; off < len(raw) && werr == nil; off += 1 << 20 {
				_, werr = w.Write(raw[off : off+1<<20])
			}
			cerr := w.Close()
			if !errors.Is(werr, errOutput) || !errors.Is(cerr, errOutput) {
				done <- fmt.Errorf("Write: %v, Close: %v; want both to be the output's error", werr, cerr)
				return
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%d workers: %v", workers, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d workers: the writer hangs after its output failed", workers)
		}
	}
}
