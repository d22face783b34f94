package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The adversarial suite of untrusted servers and endless sources: every
// case is a server (or a stdin) that lies or never ends, the exit code and
// reason the import must end with, and what it may cost.

// rangeLiar serves one file honestly to a plain GET (200, Content-Length,
// Accept-Ranges, an ETag) and answers every Range request with lie. With
// cutAt > 0 the first plain GET is cut after that many bytes, so a stream
// import must resume with a Range request.
type rangeLiar struct {
	data  []byte
	lie   string
	cutAt int
	cut   atomic.Bool
}

// rangeLies are the ways a 206 (or its body) can differ from the range
// asked for. "honest" is the control: the same server, telling the truth.
var rangeLies = []string{"honest", "no-content-range", "wrong-start", "wrong-end", "wrong-total", "star-total-wrong-end",
	"garbage-header", "short-body", "long-body", "short-content-length", "whole-file"}

func (l *rangeLiar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("ETag", `"v1"`)
	size := int64(len(l.data))
	rng := r.Header.Get("Range")
	if rng == "" {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		if l.cutAt > 0 && l.cut.CompareAndSwap(false, true) {
			w.Write(l.data[:l.cutAt])
			panic(http.ErrAbortHandler)
		}
		w.Write(l.data)
		return
	}
	var first, last int64
	spec := strings.TrimPrefix(rng, "bytes=")
	a, b, _ := strings.Cut(spec, "-")
	first, _ = strconv.ParseInt(a, 10, 64)
	last = size - 1
	if b != "" {
		last, _ = strconv.ParseInt(b, 10, 64)
	}
	body := l.data[first : last+1]
	cr := func(f, e int64, total string) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", f, e, total))
	}
	total := strconv.FormatInt(size, 10)
	chunked := false // no Content-Length: the body's end is the server's word
	switch l.lie {
	case "honest":
		cr(first, last, total)
	case "no-content-range":
	case "wrong-start": // the bytes from 512 on, labelled as such
		body = l.data[first+512 : last+1]
		cr(first+512, last, total)
	case "wrong-end":
		body = body[:len(body)-512]
		cr(first, last-512, total)
	case "wrong-total": // another version of the file, one sector longer
		cr(first, last, strconv.FormatInt(size+512, 10))
	case "star-total-wrong-end":
		body = body[:len(body)-1]
		cr(first, last-1, "*")
	case "garbage-header":
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d", first, last))
	case "short-body":
		cr(first, last, total)
		body, chunked = body[:len(body)-100], true
	case "long-body":
		cr(first, last, total)
		body, chunked = append(append([]byte(nil), body...), make([]byte, 4096)...), true
	case "short-content-length": // framing that agrees with a short body
		cr(first, last, total)
		body = body[:len(body)-100]
	case "trickle": // the right bytes, one every 100ms
		cr(first, last, total)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusPartialContent)
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		return
	case "whole-file":
		w.Header().Set("Content-Length", total)
		w.WriteHeader(http.StatusOK)
		w.Write(l.data)
		return
	}
	if !chunked {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(http.StatusPartialContent)
	if chunked {
		w.(http.Flusher).Flush() // headers out first: the body is chunked
	}
	w.Write(body)
}

// importResult runs an import bounded by b into a new directory and
// returns the run, its result and the directory.
func importResult(t *testing.T, b bound, stdin io.Reader, args ...string) (boundedRun, *jobapi.Result, string) {
	t.Helper()
	return importInto(t, b, stdin, t.TempDir(), args...)
}

// importInto is importResult into target, a directory or a device.
func importInto(t *testing.T, b bound, stdin io.Reader, target string, args ...string) (boundedRun, *jobapi.Result, string) {
	t.Helper()
	res := filepath.Join(t.TempDir(), "result.json")
	argv := append([]string{"import", "--result-file", res, "--retry-backoff", "10ms", "--retries", "2", "--progress-interval", "0", "--target", target}, args...)
	run := runBounded(t, b, stdin, argv...)
	raw, err := os.ReadFile(res)
	if err != nil {
		t.Fatalf("no result (exit %d): %s", run.Code, run.Stderr)
	}
	r, err := jobapi.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return run, r, target
}

// wantOutcome checks an import's exit code and reason, that a failure
// leaves nothing in the target directory and says so in one stderr line,
// and that a success holds want.
func wantOutcome(t *testing.T, run boundedRun, r *jobapi.Result, dir string, code int, reason string, want []byte) {
	t.Helper()
	t.Logf("%s: %s", r.Reason, r.Message)
	if run.Code != code || r.Reason != reason {
		t.Fatalf("exit %d %s (%s), want exit %d %s; stderr: %s", run.Code, r.Reason, r.Message, code, reason, run.Stderr)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return // a device: what it holds after a failure is not a disk
	}
	if code == 0 {
		got, err := os.ReadFile(filepath.Join(dir, "disk.img"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("disk.img differs from the source (%v)", err)
		}
		return
	}
	emptyDir(t, dir)
	if lines := strings.Count(strings.TrimSpace(run.Stderr), "\n") + 1; !strings.Contains(run.Stderr, r.Message) || lines > 4 {
		t.Fatalf("stderr does not say it in a line: %q", run.Stderr)
	}
}

// A 206 that is not the range asked for is never data: not for the
// random-access reader (a sparse VMDK read in place) and not for a stream
// resuming after a cut. It is permanent: the same proxy lies again.
func TestHostileRangeReplies(t *testing.T) {
	f := getFixture(t)
	b := bound{Time: 5 * time.Second, Mem: 38 << 20}
	for _, path := range []struct {
		name  string
		data  []byte
		cutAt int
	}{
		{"in place", f.sparse, 0},          // every read a Range request
		{"stream resumed", f.raw, 3 << 20}, // one Range request, after the cut
	} {
		for _, lie := range rangeLies {
			t.Run(path.name+"/"+lie, func(t *testing.T) {
				ts := httptest.NewServer(&rangeLiar{data: path.data, lie: lie, cutAt: path.cutAt})
				defer ts.Close()
				run, r, dir := importResult(t, b, nil, ts.URL+"/disk")
				code, reason := jobapi.ExitPermanent, jobapi.ReasonSourceError
				if lie == "honest" {
					code, reason = 0, jobapi.ReasonSucceeded
				}
				wantOutcome(t, run, r, dir, code, reason, f.raw)
			})
		}
	}
}

// endlessServer answers every request with a body that never ends: its
// Content-Length (none when length < 0), then b in chunks of chunk bytes
// every every (0: as fast as the client reads), until the client goes. A
// Range request gets a 206 for the range asked, just as slowly.
type endlessServer struct {
	length int64
	b      byte
	chunk  int
	every  time.Duration
	silent bool // no headers at all: the reply never starts
}

func (e *endlessServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.silent {
		<-r.Context().Done()
		return
	}
	if e.length >= 0 {
		w.Header().Set("Accept-Ranges", "bytes")
		n := e.length
		if rng := r.Header.Get("Range"); rng != "" {
			a, b, _ := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
			first, _ := strconv.ParseInt(a, 10, 64)
			last := e.length - 1
			if b != "" {
				last, _ = strconv.ParseInt(b, 10, 64)
			}
			n = last - first + 1
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, e.length))
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
	}
	chunk := bytes.Repeat([]byte{e.b}, e.chunk)
	for {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(e.every):
		}
	}
}

// trickle is a stdin (a pipe) that gives one byte every every until the
// test ends (every 0: stays open and silent). A pipe, not an io.Reader:
// exec would wait for its copy of a reader that never returns.
func trickle(t *testing.T, every time.Duration) io.Reader {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); w.Close(); r.Close() })
	if every > 0 {
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(every):
				}
				if _, err := w.Write([]byte{0x5a}); err != nil {
					return
				}
			}
		}()
	}
	return r
}

// Sources that never end, or trickle, or never answer, are given up in
// bounded time with a reason: the size limit (TargetTooSmall), the
// minimum throughput (NetworkError: the link or server may do better on
// the next attempt) or the deadline (DeadlineExceeded, also transient).
func TestHostileEndlessSources(t *testing.T) {
	slowRule := []string{"--min-throughput", "1k", "--throughput-window", "1s", "--retries", "1"}
	for _, tc := range []struct {
		name   string
		server http.Handler  // nil: stdin
		stdin  time.Duration // with server nil: a stdin trickling at this pace (0: silent)
		args   []string
		code   int
		reason string
		bound  time.Duration
	}{
		{name: "HTTP zeros without Content-Length", server: &endlessServer{length: -1, chunk: 1 << 20},
			args: []string{"--max-size", "64M"}, code: 3, reason: jobapi.ReasonTargetTooSmall, bound: 5 * time.Second},
		{name: "HTTP data without Content-Length", server: &endlessServer{length: -1, b: 0x5a, chunk: 1 << 20},
			args: []string{"--max-size", "64M"}, code: 3, reason: jobapi.ReasonTargetTooSmall, bound: 5 * time.Second},
		{name: "HTTP data without Content-Length past --deadline", server: &endlessServer{length: -1, b: 0x5a, chunk: 64 << 10, every: 10 * time.Millisecond},
			args: []string{"--deadline", "1s"}, code: 1, reason: jobapi.ReasonDeadlineExceeded, bound: 3 * time.Second},
		{name: "HTTP one byte at a time", server: &endlessServer{length: 24 << 20, b: 0x5a, chunk: 1, every: 100 * time.Millisecond},
			args: slowRule, code: 1, reason: jobapi.ReasonNetworkError, bound: 6 * time.Second},
		{name: "HTTP one byte at a time, in place", server: &rangeLiar{data: getFixture(t).sparse, lie: "trickle"},
			args: slowRule, code: 1, reason: jobapi.ReasonNetworkError, bound: 6 * time.Second},
		{name: "HTTP one byte at a time past --deadline", server: &endlessServer{length: -1, b: 0x5a, chunk: 1, every: 100 * time.Millisecond},
			args: []string{"--deadline", "1s"}, code: 1, reason: jobapi.ReasonDeadlineExceeded, bound: 3 * time.Second},
		{name: "HTTP headers never sent past --deadline", server: &endlessServer{silent: true},
			args: []string{"--deadline", "1s"}, code: 1, reason: jobapi.ReasonDeadlineExceeded, bound: 3 * time.Second},
		{name: "stdin one byte at a time", stdin: 100 * time.Millisecond,
			args: slowRule, code: 1, reason: jobapi.ReasonNetworkError, bound: 4 * time.Second},
		{name: "stdin open and silent",
			args: slowRule, code: 1, reason: jobapi.ReasonNetworkError, bound: 4 * time.Second},
		{name: "stdin open and silent past --deadline",
			args: []string{"--deadline", "1s"}, code: 1, reason: jobapi.ReasonDeadlineExceeded, bound: 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "-"
			var stdin io.Reader
			if tc.server == nil {
				stdin = trickle(t, tc.stdin)
			} else {
				ts := httptest.NewServer(tc.server)
				defer ts.Close()
				src = ts.URL + "/disk"
			}
			run, r, dir := importResult(t, bound{Time: tc.bound, Mem: 38 << 20}, stdin, append(tc.args, src)...)
			wantOutcome(t, run, r, dir, tc.code, tc.reason, nil)
		})
	}
}

// An import stops within a second of SIGTERM whatever it is doing: exit
// 143, a Terminated result, and (where the copy could clean up) nothing
// left in the target or the scratch directory.
func TestHostileSIGTERMInEveryState(t *testing.T) {
	f := getFixture(t)
	for _, tc := range []struct {
		name   string
		server http.Handler // nil: stdin, open and silent
		args   []string
	}{
		{name: "waiting for the reply's headers", server: &endlessServer{silent: true}},
		{name: "reading a trickling body", server: &endlessServer{length: -1, b: 0x5a, chunk: 1, every: 100 * time.Millisecond}},
		{name: "reading a stalled body", server: &endlessServer{length: -1, b: 0x5a, chunk: 4096, every: time.Hour}},
		{name: "waiting to retry", server: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }), args: []string{"--retry-backoff", "1m"}},
		{name: "reading a silent stdin", args: []string{"--min-throughput", "0"}},
		{name: "writing", server: &endlessServer{length: -1, b: 0x5a, chunk: 1 << 20}},
		{name: "spooling", server: &server{files: map[string][]byte{"disk": f.sparse}, noRange: true, delay: 20 * time.Millisecond}, args: []string{"--scratch-dir", "SCRATCH"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, scratch := t.TempDir(), t.TempDir()
			args := []string{"--progress-interval", "0"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "SCRATCH", scratch))
			}
			src, stdin := "-", io.Reader(nil)
			if tc.server != nil {
				ts := httptest.NewServer(tc.server)
				defer ts.Close()
				src = ts.URL + "/disk"
			} else {
				stdin = trickle(t, 0)
			}
			sig := terminateImport(t, dir, stdin, time.Second, append(args, src)...)
			if sig.run.Code != jobapi.ExitTerminated || sig.result.Reason != jobapi.ReasonTerminated {
				t.Fatalf("exit %d, result %+v, stderr %s", sig.run.Code, sig.result, sig.run.Stderr)
			}
			emptyDir(t, dir)
			emptyDir(t, scratch)
		})
	}
}

// stopped is an import terminated by SIGTERM: its exit, and its result
// as read within the bound after the signal.
type stopped struct {
	run    boundedRun
	result *jobapi.Result
}

// terminateImport starts an import into dir, sends it SIGTERM once it
// has been at work for 500ms, and fails unless it has written its result
// and exited within within of the signal. Elapsed and MaxRSS are measured
// from the signal and are the child's own (VmHWM).
func terminateImport(t *testing.T, dir string, stdin io.Reader, within time.Duration, args ...string) stopped {
	t.Helper()
	tmp := t.TempDir()
	res, hwm := filepath.Join(tmp, "result.json"), filepath.Join(tmp, "hwm")
	cmd := imagerCmd(append([]string{"import", "--result-file", res, "--target", dir}, args...)...)
	cmd.Env = append(cmd.Env, "IMAGER_TEST_HWM="+hwm)
	cmd.Stdin = stdin
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("imager ended before the signal: %v, %s", err, errb.String())
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-exited:
	case <-time.After(within):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("still running %v after SIGTERM; stderr: %s", within, errb.String())
	}
	var s stopped
	s.run.Elapsed, s.run.Stderr = time.Since(start), errb.String()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		s.run.Code = ee.ExitCode()
	}
	if kb, err := os.ReadFile(hwm); err == nil {
		s.run.MaxRSS, _ = strconv.ParseInt(string(kb), 10, 64)
		s.run.MaxRSS <<= 10
	}
	raw, rerr := os.ReadFile(res)
	if s.result, err = jobapi.Parse(string(raw)); rerr != nil || err != nil {
		t.Fatalf("no result after SIGTERM (exit %d): %v %v; stderr %s", s.run.Code, rerr, err, s.run.Stderr)
	}
	t.Logf("%s: exit %d %v after SIGTERM, peak RSS %d MiB", t.Name(), s.run.Code, s.run.Elapsed.Round(time.Millisecond), s.run.MaxRSS>>20)
	if idle := idleRSS(t); s.run.MaxRSS-idle > 38<<20 {
		t.Errorf("peak RSS %d bytes, %d above the idle process's: bound %d", s.run.MaxRSS, s.run.MaxRSS-idle, 38<<20)
	}
	reportBound(t.Name(), s.run.Elapsed, s.run.MaxRSS)
	return s
}

// An empty source is an upstream failure, never a disk: stdin closed at
// once, an empty HTTP object, a compressed stream of nothing. Each fails
// as InvalidImage with nothing in the target, instead of a 0-byte disk.img.
func TestHostileEmptySources(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		http bool
	}{
		{name: "stdin closed at once"},
		{name: "stdin gzip of nothing", body: gzipBytes(t, nil)},
		{name: "stdin zstd of nothing", body: zstdBytes(t, nil)},
		{name: "HTTP empty object", http: true},
		{name: "HTTP gzip of nothing", body: gzipBytes(t, nil), http: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, stdin := "-", io.Reader(bytes.NewReader(tc.body))
			if tc.http {
				ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.ServeContent(w, r, "disk", time.Time{}, bytes.NewReader(tc.body))
				}))
				defer ts.Close()
				src, stdin = ts.URL+"/disk", nil
			}
			run, r, dir := importResult(t, bound{Time: 5 * time.Second, Mem: 38 << 20}, stdin, src)
			wantOutcome(t, run, r, dir, jobapi.ExitPermanent, jobapi.ReasonInvalidImage, nil)
		})
	}
}
