package vmdk

import (
	"io"
	"testing"
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
