package main

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// The hostile stream class, through the imager: a streamOptimized image
// cut short, read sequentially from stdin or from an HTTP server without
// Range support, fails permanently as InvalidImage; it never becomes a
// Succeeded disk with its tail zeroed.

type streamCut struct {
	name string
	img  []byte
	raw  []byte
}

// streamCuts are small streams from our writer, qemu-img and VMDKstream.
func streamCuts(t *testing.T) []streamCut {
	t.Helper()
	dir := t.TempDir()
	raw := make([]byte, 200<<10+3*512) // a partial last grain
	rand.New(rand.NewSource(5)).Read(raw[64<<10 : 80<<10])
	copy(raw[150<<10:], bytes.Repeat([]byte("grain table "), 3000))
	var ours bytes.Buffer
	w, err := vmdk.NewStreamWriter(&ours, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: int64(len(raw)), GrainSize: 8 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "in.raw"), raw, 0o644)
	qemu(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "in.raw", "q.vmdk")
	q, _ := os.ReadFile(filepath.Join(dir, "q.vmdk"))
	vsPath, _ := filepath.Abs("../vmdk/testdata/stream-vmdkstream.vmdk")
	vs, err := os.ReadFile(vsPath)
	if err != nil {
		t.Fatal(err)
	}
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", vsPath, "vs.raw")
	vsRaw, _ := os.ReadFile(filepath.Join(dir, "vs.raw"))
	return []streamCut{{"ours", ours.Bytes(), raw}, {"qemu-img", q, raw}, {"vmdkstream", vs, vsRaw}}
}

// markerCuts are the byte offsets where a stream's markers start (and its
// end): there a cut stream looks like one that ended cleanly, the cuts a
// reader must prove wrong. Every 16th sector from the header's end is
// added too (an empty source, or one shorter than a header, is not
// recognisable as a stream: those are the sources' class).
func markerCuts(img []byte) []int {
	cuts := map[int]bool{}
	for c := 512; c < len(img); c += 16 * 512 {
		cuts[c] = true
	}
	pos := int(binary.LittleEndian.Uint64(img[64:])) * 512 // overHead: the first grain
	for zeros := 0; pos+512 <= len(img); {
		val, size := binary.LittleEndian.Uint64(img[pos:]), binary.LittleEndian.Uint32(img[pos+8:])
		if zeros == 0 {
			cuts[pos] = true
		}
		zeros = 0
		switch {
		case size != 0:
			pos += (12 + int(size) + 511) / 512 * 512
		case val == 0:
			pos += 512 // an end-of-stream marker, or qemu's zero padding
			zeros++
		default:
			pos += 512 + int(val)*512
		}
	}
	var out []int
	for c := range cuts {
		if c < len(img) {
			out = append(out, c)
		}
	}
	return out
}

// noRangeServer serves body with its length and without Range support:
// the importer must read it as a stream.
func noRangeServer(t *testing.T, body []byte) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/disk.vmdk"
}

// TestHostileStreamImport: each cut at a marker boundary (and every 16th
// sector), from stdin and from HTTP, either imports the whole disk (a cut
// in qemu's zero padding loses nothing) or fails with exit 3 InvalidImage.
func TestHostileStreamImport(t *testing.T) {
	b := bound{Time: 10 * time.Second, Mem: 54 << 20}
	for _, s := range streamCuts(t) {
		for _, via := range []string{"stdin", "http"} {
			t.Run(s.name+"/"+via, func(t *testing.T) {
				refused := 0
				for _, cut := range append(markerCuts(s.img), len(s.img)) {
					img := s.img[:cut]
					var run boundedRun
					var r *jobapi.Result
					var dir string
					if via == "stdin" {
						run, r, dir = importResult(t, b, bytes.NewReader(img), "-")
					} else {
						run, r, dir = importResult(t, b, nil, noRangeServer(t, img))
					}
					if run.Code == 0 {
						got, err := os.ReadFile(filepath.Join(dir, "disk.img"))
						if err != nil || !bytes.Equal(got, s.raw) {
							t.Fatalf("cut at byte %d of %d: Succeeded with a disk that differs from the source (%v)", cut, len(s.img), err)
						}
						continue
					}
					refused++
					wantOutcome(t, run, r, dir, jobapi.ExitPermanent, jobapi.ReasonInvalidImage, nil)
				}
				if refused == 0 {
					t.Fatal("no cut was refused")
				}
			})
		}
	}
}

// TestHostileStreamCheckExit: `imager check` exits 2 (corrupt), not 0, on
// a stream grain that is a zlib bomb or has a bad Adler-32, and on a
// sparse file 3 bytes short of its last grain.
func TestHostileStreamCheckExit(t *testing.T) {
	dir := t.TempDir()
	raw := bytes.Repeat([]byte("grain directory "), 64<<10) // 1 MiB that compresses
	var img bytes.Buffer
	w, err := vmdk.NewStreamWriter(&img, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: int64(len(raw))}})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	first := int(binary.LittleEndian.Uint64(img.Bytes()[64:])) * 512 // overHead: the first grain marker
	size := int(binary.LittleEndian.Uint32(img.Bytes()[first+8:]))
	withGrain := func(data []byte) []byte {
		b := bytes.Clone(img.Bytes())
		if len(data) > (12+size+511)/512*512-12 {
			t.Fatalf("%d bytes do not fit the grain", len(data))
		}
		binary.LittleEndian.PutUint32(b[first+8:], uint32(len(data)))
		copy(b[first+12:], data)
		return b
	}
	var bomb bytes.Buffer
	zw := zlib.NewWriter(&bomb)
	zw.Write(make([]byte, 256<<10))
	zw.Close()
	badSum := bytes.Clone(img.Bytes()[first+12 : first+12+size])
	badSum[len(badSum)-1] ^= 0xff
	os.WriteFile(filepath.Join(dir, "in.raw"), raw, 0o644)
	qemu(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "in.raw", "s.vmdk")
	sparse, _ := os.ReadFile(filepath.Join(dir, "s.vmdk"))
	for _, c := range []struct {
		name string
		img  []byte
		code int
	}{
		{"intact stream", img.Bytes(), checkClean},
		{"zlib bomb", withGrain(bomb.Bytes()), checkCorrupt},
		{"bad Adler-32", withGrain(badSum), checkCorrupt},
		{"sparse 3 bytes short", sparse[:len(sparse)-3], checkCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.vmdk")
			os.WriteFile(path, c.img, 0o644)
			run := runBounded(t, bound{Time: 10 * time.Second, Mem: 54 << 20}, nil, "check", path)
			if run.Code != c.code {
				t.Fatalf("exit %d, want %d: %s%s", run.Code, c.code, run.Stdout, run.Stderr)
			}
		})
	}
}

// TestHostileStreamNetworkCut: a connection that keeps dropping inside a
// stream is the network's fault, not the image's: once the retries are
// spent the import fails as a transient NetworkError (exit 1), not as a
// permanent InvalidImage that would stop the Job from trying again.
func TestHostileStreamNetworkCut(t *testing.T) {
	s := streamCuts(t)[2]
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(s.img)))
		// Past what the importer peeks at to detect the format, inside a
		// grain; then the handler returns: the connection is cut short.
		w.Write(s.img[:len(s.img)*3/4])
	}))
	t.Cleanup(ts.Close)
	run, r, dir := importResult(t, bound{Time: 10 * time.Second, Mem: 54 << 20}, nil, "--retries", "0", ts.URL+"/disk.vmdk")
	wantOutcome(t, run, r, dir, jobapi.ExitTransient, jobapi.ReasonNetworkError, nil)
}

// endlessSource sends head, then unit forever.
type endlessSource struct {
	head, unit []byte
	pos        int
}

func (e *endlessSource) Read(p []byte) (int, error) {
	for n := 0; ; {
		if n == len(p) {
			return n, nil
		}
		if e.pos < len(e.head) {
			k := copy(p[n:], e.head[e.pos:])
			n, e.pos = n+k, e.pos+k
			continue
		}
		k := copy(p[n:], e.unit[(e.pos-len(e.head))%len(e.unit):])
		n, e.pos = n+k, e.pos+k
	}
}

// TestHostileStreamEndlessImport: stdin streams of markers that never end
// (grain tables without grains, zeros after the end-of-stream marker) are
// refused as InvalidImage once past what the header's capacity allows,
// promptly and in bounded memory.
func TestHostileStreamEndlessImport(t *testing.T) {
	// A streamOptimized header: 64 MiB (two grain tables of 64 KiB grains),
	// no descriptor, the directory at the end.
	h := make([]byte, 512)
	copy(h, "KDMV")
	binary.LittleEndian.PutUint32(h[4:], 3)
	binary.LittleEndian.PutUint32(h[8:], 1|1<<16|1<<17)
	binary.LittleEndian.PutUint64(h[12:], 64<<20/512)
	binary.LittleEndian.PutUint64(h[20:], 128)
	binary.LittleEndian.PutUint32(h[44:], 512)
	binary.LittleEndian.PutUint64(h[56:], ^uint64(0))
	binary.LittleEndian.PutUint64(h[64:], 1)
	copy(h[73:], "\n \r\n")
	binary.LittleEndian.PutUint16(h[77:], 1)
	gt := make([]byte, 5*512) // a GT marker (4 sectors, type 1) and an empty table
	binary.LittleEndian.PutUint64(gt, 4)
	binary.LittleEndian.PutUint32(gt[12:], 1)
	for _, c := range []struct {
		name string
		unit []byte
	}{
		{"grain tables forever", gt},
		{"zeros forever", make([]byte, 512)},
	} {
		t.Run(c.name, func(t *testing.T) {
			run, r, dir := importResult(t, bound{Time: 10 * time.Second, Mem: 54 << 20}, &endlessSource{head: h, unit: c.unit}, "-")
			wantOutcome(t, run, r, dir, jobapi.ExitPermanent, jobapi.ReasonInvalidImage, nil)
		})
	}
}
