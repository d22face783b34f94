package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func genFile(t *testing.T, size, content int64, seed uint64) ([]byte, mix) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "src.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := generate(f, size, content, seed)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("file is %d bytes, want %d", len(b), size)
	}
	return b, m
}

// TestGenMix: the bytes are the mix (40% zeros, 20% random, 40%
// text, within a few points at 64 MiB), and the counts are what the file
// holds: as many zero grains as zero pieces (text and random pieces have
// no zero grain).
func TestGenMix(t *testing.T) {
	const size = 64 << 20
	b, m := genFile(t, size, size, 1)
	if m[kindZero]+m[kindRandom]+m[kindText] != size {
		t.Fatalf("mix %v does not add up to %d", m, size)
	}
	for kind, want := range map[int]float64{kindZero: 0.4, kindRandom: 0.2, kindText: 0.4} {
		if got := float64(m[kind]) / size; got < want-0.06 || got > want+0.06 {
			t.Errorf("kind %d is %.3f of the bytes, want %.2f±0.06 (mix %v)", kind, got, want, m)
		}
	}
	var zeroGrains int64
	for off := 0; off < size; off += pieceUnit {
		if allZero(b[off : off+pieceUnit]) {
			zeroGrains++
		}
	}
	if zeroGrains*pieceUnit != m[kindZero] {
		t.Errorf("%d zero grains in the file, %d bytes of zero pieces counted", zeroGrains, m[kindZero])
	}
}

// TestGenDeterministic: a seed fixes every byte; another seed is another
// disk.
func TestGenDeterministic(t *testing.T) {
	a, _ := genFile(t, 8<<20, 8<<20, 7)
	b, _ := genFile(t, 8<<20, 8<<20, 7)
	c, _ := genFile(t, 8<<20, 8<<20, 8)
	if !bytes.Equal(a, b) {
		t.Error("the same seed made two different disks")
	}
	if bytes.Equal(a, c) {
		t.Error("seeds 7 and 8 made the same disk")
	}
}

// TestGenSpread: -content over a larger -size is the same content, piece
// for piece in the same order, each piece starting at its offset times
// size/content, with holes between: its non-zero grains are the dense
// disk's, in order, reaching past the dense disk's end.
func TestGenSpread(t *testing.T) {
	const content, spread = 8 << 20, 4
	dense, _ := genFile(t, content, content, 3)
	sparse, m := genFile(t, content*spread, content, 3)
	grains := func(b []byte) (g [][]byte, last int) {
		for off := 0; off < len(b); off += pieceUnit {
			if !allZero(b[off : off+pieceUnit]) {
				g, last = append(g, b[off:off+pieceUnit]), off
			}
		}
		return g, last
	}
	dg, dlast := grains(dense)
	sg, slast := grains(sparse)
	if int64(len(dg))*pieceUnit != m[kindRandom]+m[kindText] {
		t.Fatalf("dense disk: %d data grains, the mix says %d bytes", len(dg), m[kindRandom]+m[kindText])
	}
	if len(sg) != len(dg) {
		t.Fatalf("spread disk: %d data grains, the dense one %d", len(sg), len(dg))
	}
	for i := range dg {
		if !bytes.Equal(dg[i], sg[i]) {
			t.Fatalf("data grain %d differs between the dense and the spread disk", i)
		}
	}
	if slast < dlast*spread-3*maxPiece || slast < content {
		t.Errorf("the spread disk's last data grain is at %d: not spread (the dense one's is at %d)", slast, dlast)
	}
}

func TestGenRefuses(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range [][2]int64{{1 << 20, 2 << 20}, {1 << 20, 0}, {1<<20 + 512, 1 << 20}, {2 << 20, 1<<20 + 512}} {
		if _, err := generate(f, c[0], c[1], 1); err == nil {
			t.Errorf("size %d content %d: no error", c[0], c[1])
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64M": 64 << 20, "1G": 1 << 30, "16g": 16 << 30, "4096": 4096, "1T": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "1X", "M", "99999999999T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}
