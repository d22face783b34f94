package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSampleGrains: only non-zero grains are sampled, at most the bound,
// and the data count is the disk's.
func TestSampleGrains(t *testing.T) {
	p := filepath.Join(t.TempDir(), "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := generate(f, 16<<20, 16<<20, 2)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	data := m[kindRandom] + m[kindText]
	all, n, err := sampleGrains(p, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if n != data || int64(len(all))*grainSize != data {
		t.Fatalf("sampled %d grains of %d data bytes; the disk has %d", len(all), n, data)
	}
	for i, g := range all {
		if allZero(g) {
			t.Fatalf("sampled grain %d is zeros", i)
		}
	}
	some, _, err := sampleGrains(p, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(some) == 0 || int64(len(some))*grainSize > 2<<20 {
		t.Errorf("a 2 MiB sample has %d grains", len(some))
	}
}

// TestFloor: every codec's lines are there, once for a level given twice,
// and its inflate round trip held (floor fails on a grain that inflates to
// other bytes).
func TestFloor(t *testing.T) {
	p := filepath.Join(t.TempDir(), "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = generate(f, 2<<20, 2<<20, 2)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := floorMain([]string{"-src", p, "-levels", "6,6", "-mib", "1"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"klauspost/compress/zlib deflate -6, 1 goroutine\t", "klauspost/compress/zlib deflate -6, 2 goroutines\t",
		"klauspost/compress/zlib inflate (with a compare), 2 goroutines\t",
		"compress/zlib (Go) deflate -6, 1 goroutine\t", "compress/zlib (Go) inflate (with a compare), 1 goroutine\t",
	} {
		if !strings.Contains(out.String(), "floor\t"+want) {
			t.Errorf("no %q line in:\n%s", want, out.String())
		}
	}
	s := &samples{byName: map[string]*row{}}
	if err := parseSamples(s, "floor", &out); err != nil || len(s.floor) != 9 {
		t.Errorf("floor's output as samples: %d floor records, %v", len(s.floor), err)
	}
}
