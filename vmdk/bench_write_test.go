package vmdk

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// Write-throughput benchmarks on 64 MiB of the benchmark script's kind of
// disk (pieces of 64 KiB to 3 MiB: 40% holes, 20% random, 40% log lines),
// fed the way imager convert feeds them:
//
//	go test ./vmdk -run '^$' -bench 'StreamWrite|SparseWrite' -benchmem -count 6
//
// MB/s is guest bytes per second (holes included). Log lines, unlike
// mixedContent's few repeated words, compress about as real guest text
// does (3-4x), so deflate's share of the time is what it is in the tool.

const benchWriteBytes = 64 << 20

// logDisk returns n bytes of the benchmark script's mix, from seed.
func logDisk(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 16))
	b := make([]byte, n)
	for off := 0; off < n; {
		end := min(off+(1+r.IntN(48))<<16, n)
		switch k := r.IntN(10); {
		case k < 4: // a hole
		case k < 6:
			for i := off; i < end; i += 8 {
				v := r.Uint64()
				for j := i; j < min(i+8, end); j++ {
					b[j], v = byte(v), v>>8
				}
			}
		default:
			vmdktest.LogLines(r, b[off:end])
		}
		off = end
	}
	return b
}

// feedChunks calls write for each 4 MiB chunk of raw (what imager's copy
// engine reads per step) split into its runs of non-zero grains, in
// order: the zero grains are holes, as copy.WriteSparse leaves them.
func feedChunks(b *testing.B, raw []byte, grain int, write func(p []byte, off int64) error) {
	const chunk = 4 << 20
	for c := 0; c < len(raw); c += chunk {
		end := min(c+chunk, len(raw))
		for g := c; g < end; {
			if isZero(raw[g:min(g+grain, end)]) {
				g += grain
				continue
			}
			run := g
			for g < end && !isZero(raw[g:min(g+grain, end)]) {
				g += grain
			}
			if err := write(raw[run:min(g, end)], int64(run)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkStreamWrite compresses the disk into a streamOptimized image
// at the default level (output discarded, its size reported).
func BenchmarkStreamWrite(b *testing.B) {
	raw := logDisk(1, benchWriteBytes)
	b.SetBytes(benchWriteBytes)
	b.ReportAllocs()
	var out countWriter
	start := cpuTime()
	for b.Loop() {
		out = 0
		w, err := NewStreamWriter(&out, StreamOptions{ImageOptions: ImageOptions{Size: benchWriteBytes}})
		if err != nil {
			b.Fatal(err)
		}
		feedChunks(b, raw, 64<<10, func(p []byte, off int64) error {
			_, err := w.WriteAt(p, off)
			return err
		})
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
	b.ReportMetric(float64(out), "out-bytes")
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// BenchmarkSparseWrite writes the disk into a new monolithicSparse image
// through WriteAt in the copy engine's runs, then Flush and Close.
func BenchmarkSparseWrite(b *testing.B) {
	raw := logDisk(1, benchWriteBytes)
	dir := b.TempDir()
	b.SetBytes(benchWriteBytes)
	b.ReportAllocs()
	n := 0
	start := cpuTime()
	for b.Loop() {
		n++
		p := filepath.Join(dir, fmt.Sprintf("w%d.vmdk", n))
		if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: benchWriteBytes}}); err != nil {
			b.Fatal(err)
		}
		d, err := Open(p, Options{ReadWrite: true})
		if err != nil {
			b.Fatal(err)
		}
		feedChunks(b, raw, 64<<10, func(p []byte, off int64) error {
			_, err := d.WriteAt(p, off)
			return err
		})
		if err := d.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
		os.Remove(p)
	}
	reportCPU(b, start)
}

var _ io.Writer = (*countWriter)(nil)

// cpuTime is the CPU time (user and system) the process has used: on a
// machine shared with other work, wall time per op says little, CPU time
// per op (reported as cpu-ms/op) is what a change saves.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}
