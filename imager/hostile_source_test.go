package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
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
	lowerParentPeak()
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

// lowerParentPeak resets this process's peak RSS to what it holds now:
// the child runBounded starts (vfork, then exec) inherits the parent's
// peak into its own ru_maxrss, so without this each case would be
// charged the largest buffer any earlier case made here.
func lowerParentPeak() {
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // Linux: reset the RSS high-water mark
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
	b := bound{Time: 5 * time.Second, Mem: 64 << 20}
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
