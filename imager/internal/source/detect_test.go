package source

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// gzip and zstd are told from their magic and read back to the bytes
// they hold; a stream that starts like one but is not fails as damaged.
func TestDetectAndDecompress(t *testing.T) {
	data := bytes.Repeat([]byte("not a disk, just bytes "), 10000)
	for _, tc := range []struct {
		kind Kind
		body []byte
	}{
		{KindGzip, gzipOf(t, data)},
		{KindZstd, zstdOf(t, data)},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			k, err := Detect(tc.body[:min(len(tc.body), HeadBytes)], "auto")
			if err != nil || k != tc.kind {
				t.Fatalf("detected %v %v, want %v", k, err, tc.kind)
			}
			zr, err := Decompress(k, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			zr.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("decompressed %d bytes (want %d): %v", len(got), len(data), err)
			}
			// --source-format raw takes the bytes as they are.
			if k, err := Detect(tc.body, "raw"); err != nil || k != KindRaw {
				t.Fatalf("--source-format raw: %v %v", k, err)
			}
			// Corrupt after the magic.
			bad := bytes.Clone(tc.body)
			for i := 4; i < len(bad); i++ {
				bad[i] ^= 0xa5
			}
			zr, err = Decompress(k, bytes.NewReader(bad))
			if err == nil {
				_, err = io.ReadAll(zr)
				zr.Close()
			}
			if err == nil {
				t.Fatal("a corrupt stream decompressed")
			}
		})
	}
	if k, err := Detect(data, "auto"); err != nil || k != KindRaw {
		t.Fatalf("plain bytes: %v %v", k, err)
	}
}
