package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// gzip and zstd sources, raw or streamOptimized inside, from a local file
// and over HTTP, import to the disk they hold.
func TestImportCompressed(t *testing.T) {
	f := getFixture(t)
	files := map[string][]byte{}
	for _, c := range []struct {
		ext string
		fn  func(*testing.T, []byte) []byte
	}{{"gz", gzipBytes}, {"zst", zstdBytes}} {
		files["disk.raw."+c.ext] = c.fn(t, f.raw)
		files["stream.vmdk."+c.ext] = c.fn(t, f.stream)
	}
	_, ts := newServer(t, f, func(s *server) {
		for name, b := range files {
			s.files[name] = b
		}
	})
	local := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(local, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Each compression from a file and over HTTP, each holding raw bytes
	// and a streamOptimized VMDK.
	for _, src := range []string{
		filepath.Join(local, "disk.raw.gz"), ts.URL + "/stream.vmdk.gz",
		ts.URL + "/disk.raw.zst", filepath.Join(local, "stream.vmdk.zst"),
	} {
		t.Run(filepath.Base(src)+" via "+src[:4], func(t *testing.T) {
			dir := t.TempDir()
			code, r, _, errs := runImportTest(t, "--target", dir, src)
			wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
			if r.VirtualSize != int64(len(f.raw)) {
				t.Fatalf("virtual size %d", r.VirtualSize)
			}
		})
	}
}
