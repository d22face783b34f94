package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// TestMain lets tests run imager as a child process (stdin, signals).
func TestMain(m *testing.M) {
	if os.Getenv("IMAGER_TEST_MAIN") == "1" {
		code := mainCode()
		if path := os.Getenv("IMAGER_TEST_HWM"); path != "" {
			writeHWM(path)
		}
		os.Exit(code)
	}
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir) // shared by the tests, so not a t.TempDir
	}
	os.Exit(code)
}

func imagerCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1")
	return cmd
}

// importFixture is one disk's content in the formats the tests serve.
type importFixture struct {
	dir    string
	raw    []byte
	stream []byte // streamOptimized, written by our writer
	sparse []byte // monolithicSparse, written by qemu-img
}

var (
	fixtureOnce sync.Once
	fixture     importFixture
)

// getFixture makes a 24 MiB disk: random data, a pattern, holes, and a
// data grain right at the end.
func getFixture(t *testing.T) *importFixture {
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "import-fixture-")
		if err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, 24<<20)
		rand.New(rand.NewSource(1)).Read(raw[1<<20 : 5<<20])
		for i := 9 << 20; i < 10<<20; i++ {
			raw[i] = byte(i / 4096)
		}
		copy(raw[len(raw)-64<<10:], bytes.Repeat([]byte{0xab}, 64<<10))
		os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644)
		if code, _, errs := imager("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", filepath.Join(dir, "disk.raw"), filepath.Join(dir, "stream.vmdk")); code != 0 {
			t.Fatal(errs)
		}
		qemu(t, dir, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "disk.raw", "sparse.vmdk")
		fixture = importFixture{dir: dir, raw: raw}
		fixture.stream, _ = os.ReadFile(filepath.Join(dir, "stream.vmdk"))
		fixture.sparse, _ = os.ReadFile(filepath.Join(dir, "sparse.vmdk"))
	})
	if fixture.raw == nil {
		t.Fatal("fixture failed")
	}
	return &fixture
}

// server serves files with knobs for the failure modes imports must survive.
type server struct {
	files    map[string][]byte
	noRange  bool
	cutAfter int64         // cut each response after this many bytes (0: never)
	cuts     atomic.Int64  // how many more responses to cut (with cutAfter)
	fail5xx  atomic.Int64  // answer this many requests with 503 first
	delay    time.Duration // pause per 64 KiB written
	stallAt  int64         // stop sending (without closing) at this byte, once
	stalled  atomic.Bool
	token    string
	user     string // with pass: basic auth required
	pass     string
	mu       sync.Mutex
	ranges   []string // Range headers received
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	if u, p, ok := r.BasicAuth(); s.user != "" && (!ok || u != s.user || p != s.pass) {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	if s.fail5xx.Add(-1) >= 0 {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	data, ok := s.files[strings.TrimPrefix(r.URL.Path, "/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	var ww io.Writer = w
	limit := int64(-1)
	if s.cutAfter > 0 && s.cuts.Add(-1) >= 0 {
		limit = s.cutAfter
	}
	ww = &slowWriter{w: w, s: s, limit: limit, done: r.Context().Done()}
	if s.noRange {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		ww.Write(data)
		return
	}
	w.Header().Set("ETag", `"v1"`)
	http.ServeContent(&writerOverride{w, ww}, r, "", time.Time{}, bytes.NewReader(data))
}

type writerOverride struct {
	http.ResponseWriter
	w io.Writer
}

func (o *writerOverride) Write(p []byte) (int, error) { return o.w.Write(p) }

// slowWriter paces, stalls and cuts a response.
type slowWriter struct {
	w       http.ResponseWriter
	s       *server
	limit   int64
	written int64
	done    <-chan struct{} // the request's end: the client gave up
}

func (sw *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 64<<10)
		if sw.limit >= 0 && sw.written+int64(k) > sw.limit {
			k = int(sw.limit - sw.written)
			sw.w.Write(p[:k])
			panic(http.ErrAbortHandler) // drop the connection mid-body
		}
		if sw.s.stallAt > 0 && sw.written >= sw.s.stallAt && sw.s.stalled.CompareAndSwap(false, true) {
			sw.w.(http.Flusher).Flush()
			// Hold the connection open until the client drops it (or
			// long after any test would have noticed): only the client's
			// stall timer ends the stall in time.
			select {
			case <-sw.done:
			case <-time.After(10 * time.Second):
			}
			panic(http.ErrAbortHandler)
		}
		m, err := sw.w.Write(p[:k])
		n += m
		sw.written += int64(m)
		if err != nil {
			return n, err
		}
		p = p[k:]
		if sw.s.delay > 0 {
			sw.w.(http.Flusher).Flush()
			time.Sleep(sw.s.delay)
		}
	}
	return n, nil
}

func (s *server) rangeStarts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// newServer serves the fixture; setup sets the knobs before it starts.
func newServer(t *testing.T, f *importFixture, setup func(*server)) (*server, *httptest.Server) {
	s := &server{files: map[string][]byte{"disk.raw": f.raw, "stream.vmdk": f.stream, "sparse.vmdk": f.sparse}}
	if setup != nil {
		setup(s)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

// runImport runs an import in-process and returns its exit code, result
// and stdout.
func runImportTest(t *testing.T, args ...string) (int, *jobapi.Result, string, string) {
	t.Helper()
	res := filepath.Join(t.TempDir(), "result.json")
	args = append([]string{"import", "--result-file", res, "--retry-backoff", "10ms", "--progress-interval", "20ms"}, args...)
	code, out, errs := imager(args...)
	b, err := os.ReadFile(res)
	if err != nil {
		t.Fatalf("no result file (exit %d, %s)", code, errs)
	}
	r, err := jobapi.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return code, r, out, errs
}

func wantImported(t *testing.T, code int, r *jobapi.Result, errs string, path string, want []byte) {
	t.Helper()
	if code != 0 || r.Phase != jobapi.Succeeded {
		t.Fatalf("exit %d, result %+v, stderr %s", code, r, errs)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the source content", path)
	}
}

func wantFailed(t *testing.T, code int, r *jobapi.Result, wantCode int, reason string) {
	t.Helper()
	if code != wantCode || r.Phase != jobapi.Failed || r.Reason != reason {
		t.Fatalf("want exit %d %s, got exit %d, result %+v", wantCode, reason, code, r)
	}
	if (wantCode == jobapi.ExitPermanent || wantCode == jobapi.ExitUsage) != r.Permanent {
		t.Fatalf("permanent flag %v with exit %d", r.Permanent, code)
	}
}

// emptyDir fails unless dir holds nothing: a failed import leaves no file
// that could pass for a disk.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	if e, _ := os.ReadDir(dir); len(e) != 0 {
		t.Fatalf("%s is not empty after a failure: %v", dir, e)
	}
}

func TestImportHTTPStream(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	dir := t.TempDir()
	code, r, out, errs := runImportTest(t, "--target", dir, ts.URL+"/stream.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	if r.VirtualSize != int64(len(f.raw)) || r.CreateType != "streamOptimized" || len(r.CID) != 8 || r.ParentCID != "ffffffff" || r.SourceFormat != "vmdk" || r.Spooled {
		t.Fatalf("result %+v", r)
	}
	// Sparse: the holes of the disk are holes in disk.img.
	if r.AllocatedBytes > 6<<20 || r.AllocatedBytes != target.AllocatedBytes(filepath.Join(dir, "disk.img")) {
		t.Fatalf("allocated %d bytes for 5 MiB of data", r.AllocatedBytes)
	}
	// The last progress line says 100%; every line parses.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var p jobapi.Progress
	for _, l := range lines {
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("progress line %q: %v", l, err)
		}
	}
	if p.Progress != 100 || p.BytesTotal != int64(len(f.raw)) {
		t.Fatalf("last progress %+v", p)
	}
}

func TestImportHTTPRandomAccess(t *testing.T) {
	f := getFixture(t)
	s, ts := newServer(t, f, nil)
	dir := t.TempDir()
	// Range support: read in place, no scratch space.
	code, r, _, errs := runImportTest(t, "--target", dir, ts.URL+"/sparse.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	if r.Spooled || r.CreateType != "monolithicSparse" {
		t.Fatalf("result %+v", r)
	}
	ranged := 0
	for _, h := range s.rangeStarts() {
		if h != "" {
			ranged++
		}
	}
	if ranged == 0 {
		t.Fatal("no Range requests")
	}

	// No Range support: needs scratch space, and says so.
	_, ts = newServer(t, f, func(s *server) { s.noRange = true })
	dir = t.TempDir()
	code, r, _, _ = runImportTest(t, "--target", dir, ts.URL+"/sparse.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if !strings.Contains(r.Message, "--scratch-dir") {
		t.Fatalf("message %q", r.Message)
	}
	scratch := t.TempDir()
	code, r, _, errs = runImportTest(t, "--target", dir, "--scratch-dir", scratch, ts.URL+"/sparse.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	if !r.Spooled || !strings.Contains(errs, "Range") {
		t.Fatalf("result %+v, stderr %s", r, errs)
	}
	emptyDir(t, scratch)
}

func TestImportTLSWithCustomCA(t *testing.T) {
	f := getFixture(t)
	s := &server{files: map[string][]byte{"stream.vmdk": f.stream}, token: "s3cret"}
	ts := httptest.NewTLSServer(s)
	defer ts.Close()
	tmp := t.TempDir()
	ca := filepath.Join(tmp, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)
	tok := filepath.Join(tmp, "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	dir := t.TempDir()

	code, r, _, _ := runImportTest(t, "--target", dir, ts.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceError) // unknown CA
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, ts.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnauthorized)
	emptyDir(t, dir)
	code, r, _, errs := runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, ts.URL+"/stream.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	// A mounted Secret with a token key.
	dir = t.TempDir()
	code, r, _, errs = runImportTest(t, "--target", dir, "--ca-file", ca, "--credentials-dir", tmp, ts.URL+"/stream.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, ts.URL+"/missing.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceNotFound)
}

func TestImportFlakyServerResumes(t *testing.T) {
	f := getFixture(t)
	for _, noRange := range []bool{false, true} {
		for _, name := range []string{"stream.vmdk", "disk.raw"} {
			t.Run(fmt.Sprintf("%s noRange=%v", name, noRange), func(t *testing.T) {
				s, ts := newServer(t, f, func(s *server) {
					s.noRange = noRange
					s.fail5xx.Store(2)
					s.cutAfter = 700 << 10
					s.cuts.Store(4)
				})
				dir := t.TempDir()
				code, r, _, errs := runImportTest(t, "--target", dir, ts.URL+"/"+name)
				wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
				resumed := false
				for _, h := range s.rangeStarts() {
					resumed = resumed || strings.HasPrefix(h, "bytes=") && h != "bytes=0-"
				}
				if resumed == noRange {
					t.Fatalf("Range requests %v (noRange %v)", s.rangeStarts(), noRange)
				}
			})
		}
	}
	t.Run("gives up", func(t *testing.T) {
		_, ts := newServer(t, f, func(s *server) { s.fail5xx.Store(1000) })
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, "--retries", "3", ts.URL+"/stream.vmdk")
		wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonNetworkError)
		emptyDir(t, dir)
	})
}

func TestImportSlowAndStalledServer(t *testing.T) {
	f := getFixture(t)
	s, ts := newServer(t, f, func(s *server) {
		s.delay = 2 * time.Millisecond // ~30 MB/s: many progress lines
		s.stallAt = 3 << 20
	})
	dir := t.TempDir()
	start := time.Now()
	code, r, out, errs := runImportTest(t, "--target", dir, "--stall-timeout", "300ms", ts.URL+"/stream.vmdk")
	took := time.Since(start)
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	// The server holds the stalled connection for 10s: an import that
	// ends sooner abandoned it on its own stall timer.
	if took > 4*time.Second {
		t.Fatalf("took %v: the 300ms stall timeout did not cut the stalled connection", took)
	}
	if n := strings.Count(out, "\n"); n < 5 {
		t.Fatalf("%d progress lines", n)
	}
	resumed := false
	for _, h := range s.rangeStarts() {
		resumed = resumed || h == fmt.Sprintf("bytes=%d-", s.stallAt)
	}
	if !resumed {
		t.Fatalf("the stall was not noticed: %v", s.rangeStarts())
	}
}

func TestImportChecksum(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	sum := sha256.Sum256(f.stream)
	good := "sha256:" + hex.EncodeToString(sum[:])
	sum[0] ^= 1
	bad := "sha256:" + hex.EncodeToString(sum[:])
	local := filepath.Join(f.dir, "stream.vmdk")
	for _, src := range []string{ts.URL + "/stream.vmdk", local} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--checksum", good, src)
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
		if "sha256:"+r.SHA256 != good {
			t.Fatalf("sha256 %s", r.SHA256)
		}
		dir = t.TempDir()
		code, r, _, _ = runImportTest(t, "--target", dir, "--checksum", bad, src)
		wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonChecksumMismatch)
		emptyDir(t, dir)
	}
	code, r, _, _ := runImportTest(t, "--target", t.TempDir(), "--checksum", "md5:abc", local)
	wantFailed(t, code, r, jobapi.ExitUsage, jobapi.ReasonInvalidArguments)
}

// makeOVA writes a tar of an OVF descriptor and two disks, their Files'
// ovf:size their members' sizes.
func makeOVA(t *testing.T, f *importFixture, ovfFirst bool) []byte {
	small := filepath.Join(t.TempDir(), "small.raw")
	os.WriteFile(small, bytes.Repeat([]byte{7}, 1<<20), 0o644)
	smallVMDK := filepath.Join(t.TempDir(), "small.vmdk")
	if code, _, errs := imager("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", small, smallVMDK); code != 0 {
		t.Fatal(errs)
	}
	second, _ := os.ReadFile(smallVMDK)
	ovf := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="%d"/>
    <File ovf:href="vm-disk2.vmdk" ovf:id="file2" ovf:size="%d"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="%d" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="%d" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
</Envelope>`, len(f.stream), len(second), len(f.raw), 1<<20)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	if ovfFirst {
		add("vm.ovf", []byte(ovf))
	}
	add("vm.mf", manifestOf("SHA256", [2][]byte{[]byte("vm.ovf"), []byte(ovf)}, [2][]byte{[]byte("vm-disk1.vmdk"), f.stream}, [2][]byte{[]byte("vm-disk2.vmdk"), second}))
	add("vm-disk1.vmdk", f.stream)
	add("vm-disk2.vmdk", second)
	if !ovfFirst {
		add("vm.ovf", []byte(ovf))
	}
	tw.Close()
	return buf.Bytes()
}

func TestImportOVA(t *testing.T) {
	f := getFixture(t)
	s, ts := newServer(t, f, func(s *server) {
		s.files["vm.ova"] = makeOVA(t, f, true)
		s.files["bad.ova"] = makeOVA(t, f, false)
	})
	local := filepath.Join(t.TempDir(), "vm.ova")
	os.WriteFile(local, s.files["vm.ova"], 0o644)
	small := bytes.Repeat([]byte{7}, 1<<20)
	for _, src := range []string{ts.URL + "/vm.ova", local} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, src)
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
		for _, sel := range []string{"1", "vmdisk2", "vm-disk2.vmdk"} {
			dir := t.TempDir()
			code, r, _, errs := runImportTest(t, "--target", dir, "--ova-disk", sel, src)
			wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), small)
		}
		code, r, _, _ = runImportTest(t, "--target", t.TempDir(), "--ova-disk", "vmdisk9", src)
		wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
		if !strings.Contains(r.Message, "vmdisk2") {
			t.Fatalf("the error should list the disks: %s", r.Message)
		}
	}
	code, r, _, _ := runImportTest(t, "--target", t.TempDir(), ts.URL+"/bad.ova")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidImage)
}

func TestImportToVMDK(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	for _, sf := range []string{"streamOptimized", "monolithicSparse", "twoGbMaxExtentFlat"} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--target-format", "vmdk", "-o", "subformat="+sf, ts.URL+"/stream.vmdk")
		if code != 0 {
			t.Fatalf("%s: exit %d %s", sf, code, errs)
		}
		if r.CreateType != sf || r.Target != filepath.Join(dir, "disk.vmdk") || r.AllocatedBytes == 0 {
			t.Fatalf("%s: result %+v", sf, r)
		}
		qemu(t, dir, "qemu-img", "check", "-f", "vmdk", "disk.vmdk")
		qemu(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", "disk.vmdk", filepath.Join(f.dir, "disk.raw"))
	}
}

// TestImportSize: --size grows the imported disk (zeros after the
// source's end) and refuses to shrink it.
func TestImportSize(t *testing.T) {
	f := getFixture(t)
	want := append(bytes.Clone(f.raw), make([]byte, 8<<20)...)
	for _, src := range []string{filepath.Join(f.dir, "stream.vmdk"), filepath.Join(f.dir, "disk.raw")} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--size", "32M", src)
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), want)
		if r.VirtualSize != 32<<20 {
			t.Fatalf("virtual size %d", r.VirtualSize)
		}
		dir = t.TempDir()
		code, r, _, errs = runImportTest(t, "--target", dir, "--target-format", "vmdk", "--size", "32M", src)
		if code != 0 || r.VirtualSize != 32<<20 {
			t.Fatalf("exit %d %+v %s", code, r, errs)
		}
		code, r, _, _ = runImportTest(t, "--target", t.TempDir(), "--size", "16M", src)
		wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	}
}

func TestImportStdinAndGzip(t *testing.T) {
	f := getFixture(t)
	for name, body := range map[string][]byte{"stream": f.stream, "raw": f.raw, "gzip raw": gzipBytes(t, f.raw), "gzip stream": gzipBytes(t, f.stream)} {
		dir := t.TempDir()
		res := filepath.Join(t.TempDir(), "r.json")
		cmd := imagerCmd("import", "--target", dir, "--result-file", res, "-")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v %s", name, err, out)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "disk.img")); !bytes.Equal(got, f.raw) {
			t.Fatalf("%s: content differs", name)
		}
	}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	cmd := exec.Command("gzip", "-1", "-c")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImportTerminated(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, func(s *server) { s.delay = 20 * time.Millisecond })
	dir := t.TempDir()
	res := filepath.Join(t.TempDir(), "r.json")
	cmd := imagerCmd("import", "--target", dir, "--result-file", res, "--progress-interval", "50ms", ts.URL+"/stream.vmdk")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Scan() // working
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, stdout)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != jobapi.ExitTerminated {
		t.Fatalf("exit: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	b, _ := os.ReadFile(res)
	r, err := jobapi.Parse(string(b))
	if err != nil || r.Reason != jobapi.ReasonTerminated {
		t.Fatalf("result %s %v", b, err)
	}
	emptyDir(t, dir)
}

func TestImportTargetChecks(t *testing.T) {
	f := getFixture(t)
	local := filepath.Join(f.dir, "stream.vmdk")
	// A disk far larger than the volume: refused before writing, with the
	// size the PVC needs.
	huge := filepath.Join(t.TempDir(), "huge.vmdk")
	// 2000G: near the most one sparse extent addresses (2 TiB).
	if code, _, errs := imager("create", "-o", "subformat=streamOptimized", huge, "2000G"); code != 0 {
		t.Fatal(errs)
	}
	dir := t.TempDir()
	code, r, _, _ := runImportTest(t, "--target", dir, huge)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonTargetTooSmall)
	if !strings.Contains(r.Message, "the PVC must be at least") {
		t.Fatalf("message %q", r.Message)
	}
	emptyDir(t, dir)
	// A file used as a block device: too small, then big enough and
	// holding old data that the zero ranges must clear.
	dev := filepath.Join(t.TempDir(), "dev")
	os.WriteFile(dev, bytes.Repeat([]byte{0xee}, 8<<20), 0o644)
	code, r, _, _ = runImportTest(t, "--target", dev, "--target-mode", "block", local)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonTargetTooSmall)
	// Old data only in the first MiB (zeros in the source); the rest is a
	// hole, which reads zeros: probe (the default) writes zeros over the
	// old data and nowhere else, so the hole stays a hole.
	os.WriteFile(dev, bytes.Repeat([]byte{0xee}, 1<<20), 0o644)
	os.Truncate(dev, 32<<20)
	code, r, _, errs := runImportTest(t, "--target", dev, "--target-mode", "block", local)
	if code != 0 {
		t.Fatalf("exit %d %s", code, errs)
	}
	got, _ := os.ReadFile(dev)
	if !bytes.Equal(got[:len(f.raw)], f.raw) {
		t.Fatal("block target content differs")
	}
	// 1 MiB zeroed, 5 MiB and 64 KiB of data: anything near the 24 MiB
	// of the disk means zeros were written where the device read zeros.
	if a := target.AllocatedBytes(dev); a > 8<<20 {
		t.Fatalf("probe allocated %d bytes of the device: it wrote zeros where it read zeros", a)
	}
	// --zero-mode skip trusts the device: the old bytes stay.
	os.WriteFile(dev, bytes.Repeat([]byte{0xee}, 32<<20), 0o644)
	runImportTest(t, "--target", dev, "--target-mode", "block", "--zero-mode", "skip", local)
	if got, _ := os.ReadFile(dev); got[0] != 0xee || !bytes.Equal(got[1<<20:5<<20], f.raw[1<<20:5<<20]) {
		t.Fatal("skip mode wrote zeros, or no data")
	}
}

func TestImportLoopDevice(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	dev := loopDevice(t, 32<<20)
	for _, src := range []string{ts.URL + "/stream.vmdk", ts.URL + "/sparse.vmdk"} {
		// Old data before each import: the second must not find the
		// first one's result already there.
		fillDevice(t, dev, 0x5a)
		code, r, _, errs := runImportTest(t, "--target", dev, src)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", src, code, errs)
		}
		got := make([]byte, len(f.raw))
		fd, _ := os.Open(dev)
		io.ReadFull(fd, got)
		fd.Close()
		if !bytes.Equal(got, f.raw) {
			t.Fatalf("%s: device content differs", src)
		}
		if r.Target != dev || r.TargetFormat != "raw" {
			t.Fatalf("result %+v", r)
		}
	}
}

func TestImportBadSources(t *testing.T) {
	f := getFixture(t)
	corrupt := bytes.Clone(f.stream)
	for i := 4096; i < len(corrupt)-4096; i += 512 {
		corrupt[i] ^= 0x55
	}
	_, ts := newServer(t, f, func(s *server) {
		s.files["corrupt.vmdk"] = corrupt
		s.files["qcow2"] = append([]byte("QFI\xfb"), make([]byte, 1024)...)
	})
	for name, reason := range map[string]string{"corrupt.vmdk": jobapi.ReasonInvalidImage, "qcow2": jobapi.ReasonUnsupportedImage} {
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, ts.URL+"/"+name)
		wantFailed(t, code, r, jobapi.ExitPermanent, reason)
		emptyDir(t, dir)
	}
	code, r, _, _ := runImportTest(t, "--target", t.TempDir(), filepath.Join(t.TempDir(), "nope.vmdk"))
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceNotFound)
	code, r, _, _ = runImportTest(t, "--target", filepath.Join(t.TempDir(), "nope"), filepath.Join(f.dir, "stream.vmdk"))
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonTargetError)
}

// TestCreateAndConvertResultFile: the commands Jobs run besides import
// report through the same result file.
func TestCreateAndConvertResultFile(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "r.json")
	read := func() *jobapi.Result {
		b, _ := os.ReadFile(res)
		r, err := jobapi.Parse(string(b))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	base := filepath.Join(dir, "base", "disk.vmdk")
	os.MkdirAll(filepath.Dir(base), 0o755)
	if code, _, errs := imager("create", "-q", "--result-file", res, base, "16M"); code != 0 {
		t.Fatal(errs)
	}
	b := read()
	if b.Phase != jobapi.Succeeded || b.VirtualSize != 16<<20 || len(b.CID) != 8 || b.ParentCID != "ffffffff" || b.CreateType != "monolithicSparse" {
		t.Fatalf("%+v", b)
	}
	child := filepath.Join(dir, "child", "disk.vmdk")
	os.MkdirAll(filepath.Dir(child), 0o755)
	if code, _, errs := imager("create", "-q", "--result-file", res, "--root", dir, "-b", base, child); code != 0 {
		t.Fatal(errs)
	}
	if c := read(); c.ParentCID != b.CID {
		t.Fatalf("child parentCID %s, parent CID %s", c.ParentCID, b.CID)
	}
	flat := filepath.Join(dir, "flat", "disk.vmdk")
	os.MkdirAll(filepath.Dir(flat), 0o755)
	if code, _, errs := imager("flatten", "--result-file", res, "--root", dir, "-o", "subformat=streamOptimized", child, flat); code != 0 {
		t.Fatal(errs)
	}
	if r := read(); r.Phase != jobapi.Succeeded || r.CreateType != "streamOptimized" || r.ParentCID != "ffffffff" {
		t.Fatalf("%+v", r)
	}
	bad := filepath.Join(dir, "bad.vmdk")
	os.WriteFile(bad, append([]byte("KDMV"), make([]byte, 1020)...), 0o644)
	code, _, _ := imager("convert", "-O", "vmdk", "--result-file", res, bad, filepath.Join(dir, "out.vmdk"))
	if r := read(); code != jobapi.ExitPermanent || r.Phase != jobapi.Failed || !r.Permanent {
		t.Fatalf("exit %d %+v", code, r)
	}
}

// TestWriteAndChecksum: imager write matches qemu-io's write -P, and
// checksum is the sha256 of the guest content for VMDKs, raw files and the
// --size prefix of a larger device.
func TestWriteAndChecksum(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"ours.vmdk", "theirs.vmdk"} {
		qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", name, "4M")
	}
	if code, _, errs := imager("write", "-P", "7", "1M", "100k", filepath.Join(dir, "ours.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 7 1M 100k", "theirs.vmdk")
	qemu(t, dir, "qemu-img", "compare", "ours.vmdk", "theirs.vmdk")
	qemu(t, dir, "qemu-img", "check", "ours.vmdk")
	qemu(t, dir, "qemu-img", "convert", "-O", "raw", "ours.vmdk", "ours.raw")
	raw, _ := os.ReadFile(filepath.Join(dir, "ours.raw"))
	want := sha256.Sum256(raw)
	for _, args := range [][]string{{filepath.Join(dir, "ours.vmdk")}, {"-f", "raw", filepath.Join(dir, "ours.raw")}} {
		code, out, errs := imager(append([]string{"checksum"}, args...)...)
		if code != 0 || !strings.HasPrefix(out, hex.EncodeToString(want[:])) {
			t.Fatalf("checksum %v: %d %q %s", args, code, out, errs)
		}
	}
	big := filepath.Join(dir, "big.raw")
	os.WriteFile(big, append(raw, bytes.Repeat([]byte{9}, 4096)...), 0o644)
	res := filepath.Join(dir, "r.json")
	if code, _, errs := imager("checksum", "-f", "raw", "--size", "4M", "--result-file", res, big); code != 0 {
		t.Fatal(errs)
	}
	b, _ := os.ReadFile(res)
	if r, err := jobapi.Parse(string(b)); err != nil || r.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("result %s %v", b, err)
	}
	if code, _, _ := imager("write", "-P", "1", "4M", "1", filepath.Join(dir, "ours.vmdk")); code == 0 {
		t.Fatal("wrote past the end")
	}
}

// fillDevice overwrites the whole of dev with b.
func fillDevice(t *testing.T, dev string, b byte) {
	t.Helper()
	fd, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	size, _ := fd.Seek(0, io.SeekEnd)
	if _, err := fd.WriteAt(bytes.Repeat([]byte{b}, int(size)), 0); err != nil {
		t.Fatal(err)
	}
	if err := fd.Sync(); err != nil {
		t.Fatal(err)
	}
}
