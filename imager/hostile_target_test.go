package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The adversarial suite of targets: sources whose size is not known until
// they end, against the limits of the volume, the device and --max-size.

// bomb is n bytes of b compressed as kind (gzip or zstd): a few hundred
// KiB that expand to n. Made once per kind, size and byte.
func bomb(t *testing.T, kind string, n int64, b byte) []byte {
	t.Helper()
	key := fmt.Sprint(kind, n, b)
	bombsMu.Lock()
	defer bombsMu.Unlock()
	if z, ok := bombs[key]; ok {
		return z
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	if kind == "gzip" {
		w, err = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	} else {
		w, err = zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	}
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{b}, 1<<20)
	for i := int64(0); i < n; i += int64(len(block)) {
		w.Write(block[:min(int64(len(block)), n-i)])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	bombs[key] = buf.Bytes()
	return buf.Bytes()
}

var (
	bombsMu sync.Mutex
	bombs   = map[string][]byte{}
)

// endless is a stdin that never ends: b forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// smallFileDevice is a regular file of n bytes written as a device would be
// (--target-mode block): nothing may grow it.
func smallFileDevice(t *testing.T, n int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A source that expands past what the target holds fails TargetTooSmall as
// it crosses the line (not after filling the volume, nor with a disk
// bigger than the volume reported as success), and leaves no disk.img.
func TestHostileUnknownSizeLimits(t *testing.T) {
	needRoot(t)
	f := getFixture(t)
	const mib = 1 << 20
	small := func(t *testing.T) string { return mountTmpfs(t, 0, "size=32M") }
	for _, tc := range []struct {
		name   string
		stdin  func(t *testing.T) io.Reader
		target func(t *testing.T) string // a directory, or a device
		args   []string
		spool  bool // --target-format vmdk: a raw source of unknown size is spooled first
		code   int
		reason string
		want   []byte // a success's disk
	}{
		{name: "gzip of zeros past a small volume", target: small,
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "gzip", 1<<30, 0)) }},
		{name: "zstd of zeros past a small volume", target: small,
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "zstd", 1<<30, 0)) }},
		{name: "gzip of data past a small volume", target: small,
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "gzip", 256*mib, 0x5a)) }},
		{name: "endless zeros past a small volume", target: small,
			stdin: func(t *testing.T) io.Reader { return endless(0) }},
		// Space other files hold may be freed: ENOSPC's rule, before
		// the volume is full.
		{name: "endless data past the space other files leave", code: 1, reason: jobapi.ReasonNoSpace,
			target: func(t *testing.T) string { d := mountTmpfs(t, 0, "size=64M"); fill(t, d, 40<<20); return d },
			stdin:  func(t *testing.T) io.Reader { return endless(0x5a) }},
		{name: "endless zeros past --max-size", args: []string{"--max-size", "64M"},
			stdin: func(t *testing.T) io.Reader { return endless(0) }},
		{name: "endless data past --max-size", args: []string{"--max-size", "64M"},
			stdin: func(t *testing.T) io.Reader { return endless(0x5a) }},
		{name: "known size past --max-size", args: []string{"--max-size", "16M"},
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(f.stream) }},
		{name: "gzip past a block device", target: func(t *testing.T) string { return loopDevice(t, 8*mib) },
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "gzip", 64*mib, 0x5a)) }},
		{name: "gzip of zeros past a file written as a device", target: func(t *testing.T) string { return smallFileDevice(t, 8*mib) },
			args:  []string{"--target-mode", "block", "--zero-mode", "skip"},
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "gzip", 64*mib, 0)) }},
		{name: "endless data spooled past --max-size", args: []string{"--max-size", "64M"}, spool: true,
			stdin: func(t *testing.T) io.Reader { return endless(0x5a) }},
		{name: "endless zeros spooled for a small volume", target: small, spool: true,
			stdin: func(t *testing.T) io.Reader { return endless(0) }},
		// Controls: within the limits, the same sources import.
		{name: "gzip of zeros within a small volume", target: small, code: 0, want: make([]byte, 16*mib),
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(bomb(t, "gzip", 16*mib, 0)) }},
		{name: "known size at --max-size", args: []string{"--max-size", "24M"}, code: 0, want: f.raw,
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(f.stream) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.reason != "":
			case tc.want == nil:
				tc.code, tc.reason = jobapi.ExitPermanent, jobapi.ReasonTargetTooSmall
			default:
				tc.reason = jobapi.ReasonSucceeded
			}
			target := t.TempDir()
			if tc.target != nil {
				target = tc.target(t)
			}
			stdin := tc.stdin(t)
			scratch := t.TempDir()
			if tc.spool {
				tc.args = append(tc.args, "--target-format", "vmdk", "--scratch-dir", scratch)
			}
			run, r, _ := importInto(t, bound{Time: 10 * time.Second, Mem: 38 << 20}, stdin, target, append(tc.args, "-")...)
			if tc.reason == jobapi.ReasonNoSpace { // the filler stays
				os.Remove(filepath.Join(target, "filler"))
			}
			wantOutcome(t, run, r, target, tc.code, tc.reason, tc.want)
			emptyDir(t, scratch)
			if fi, err := os.Stat(target); err == nil && fi.Mode().IsRegular() && fi.Size() != 8*mib {
				t.Fatalf("the device file grew to %d bytes", fi.Size())
			}
			if tc.want == nil && !strings.Contains(r.Message, "bytes") {
				t.Fatalf("the message does not say how big: %s", r.Message)
			}
		})
	}
}

// An import killed with SIGKILL leaves its temporary behind; the retry on
// a volume that the temporary leaves too small for the disk removes it
// (and only it: not a user's file, nor a live attempt's temporary) and
// imports, where it used to fail TargetTooSmall for good.
func TestHostileKilledImportRetries(t *testing.T) {
	needRoot(t)
	data := make([]byte, 24<<20) // all data: every byte written takes space
	rand.New(rand.NewSource(7)).Read(data)
	for _, tc := range []struct{ format, name string }{{"raw", "disk.img"}, {"vmdk", "disk.vmdk"}} {
		t.Run(tc.format, func(t *testing.T) {
			// 32 MiB holds the 25 MiB disk file once, not beside 8 MiB of
			// a killed attempt's.
			dir := mountTmpfs(t, 0, "size=32M")
			slow := httptest.NewServer(&server{files: map[string][]byte{"disk.raw": data}, delay: 5 * time.Millisecond})
			defer slow.Close()
			cmd := imagerCmd("import", "--target", dir, "--target-format", tc.format, "--progress-interval", "0", slow.URL+"/disk.raw")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); volumeUsed(t, dir) < 10<<20; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("the import wrote %d bytes in 10s", volumeUsed(t, dir))
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			left := temporaries(t, dir)
			if len(left) != 1 {
				t.Fatalf("the killed import left %v", left)
			}
			// Names like imager's that are not a dead attempt's temporary.
			user := []string{"notes.partial", "." + tc.name + ".imager-1x2.partial", "." + tc.name + ".partial"}
			for _, n := range user {
				os.WriteFile(filepath.Join(dir, n), []byte("mine"), 0o644)
			}
			live := filepath.Join(dir, "."+tc.name+".imager-4242.partial")
			lf, err := os.Create(live)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
				t.Fatal(err)
			}

			fast := httptest.NewServer(&server{files: map[string][]byte{"disk.raw": data}})
			defer fast.Close()
			run, r, _ := importInto(t, bound{Time: 10 * time.Second, Mem: 38 << 20}, nil, dir, "--target-format", tc.format, fast.URL+"/disk.raw")
			if run.Code != 0 {
				t.Fatalf("the retry: exit %d %s: %s", run.Code, r.Reason, r.Message)
			}
			for _, n := range append(user, filepath.Base(live)) {
				if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
					t.Errorf("%s removed: %v", n, err)
				}
			}
			if got := temporaries(t, dir); len(got) != 1 || got[0] != filepath.Base(live) {
				t.Fatalf("temporaries after the retry: %v", got)
			}
			got, _ := os.ReadFile(filepath.Join(dir, tc.name))
			if tc.format == "vmdk" {
				got = rawOf(t, dir, tc.name)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("the retry's disk differs from the source")
			}
		})
	}
}

// volumeUsed is how many bytes the filesystem at dir holds.
func volumeUsed(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// temporaries are the names in dir that imager's temporaries have.
func temporaries(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".imager-") && !strings.Contains(e.Name(), "1x2") {
			names = append(names, e.Name())
		}
	}
	return names
}

// A write blocked in the kernel (here: on a frozen filesystem, as a
// storage backend that stopped answering would block it) cannot be
// interrupted; the import still writes its Terminated result within a
// second of SIGTERM, leaving the temporary to the next attempt, which
// removes it.
func TestHostileSIGTERMWhileWriteBlocked(t *testing.T) {
	needRoot(t)
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 128<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	thaw := func() { exec.Command("fsfreeze", "-u", dir).Run() }
	t.Cleanup(func() { thaw(); exec.Command("umount", dir).Run() })

	// Data at ~6 MB/s: still writing when the filesystem freezes.
	ts := httptest.NewServer(&endlessServer{length: -1, b: 0x5a, chunk: 64 << 10, every: 10 * time.Millisecond})
	defer ts.Close()
	res := filepath.Join(t.TempDir(), "result.json")
	cmd := imagerCmd("import", "--result-file", res, "--progress-interval", "0", "--target", dir, ts.URL+"/disk")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	if out, err := exec.Command("fsfreeze", "-f", dir).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze: %v %s", err, out)
	}
	time.Sleep(300 * time.Millisecond) // the copy's next write blocks
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	var r *jobapi.Result
	for r == nil && time.Since(start) < time.Second {
		time.Sleep(10 * time.Millisecond)
		if raw, err := os.ReadFile(res); err == nil {
			r, _ = jobapi.Parse(string(raw))
		}
	}
	elapsed := time.Since(start)
	thaw()
	err := cmd.Wait()
	if r == nil || r.Reason != jobapi.ReasonTerminated {
		t.Fatalf("no Terminated result within a second of SIGTERM (%v): %+v; stderr %s", err, r, errb.String())
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != jobapi.ExitTerminated {
		t.Fatalf("exit %v", err)
	}
	t.Logf("result %v after SIGTERM", elapsed.Round(time.Millisecond))
	reportBound(t.Name(), elapsed, 0)

	// The copy never got to remove its temporary; the next attempt does.
	if left := temporaries(t, dir); len(left) != 1 {
		t.Fatalf("after the stopped import: %v", left)
	}
	small := httptest.NewServer(&server{files: map[string][]byte{"disk.raw": bytes.Repeat([]byte{1}, 1<<20)}})
	defer small.Close()
	run, r2, _ := importInto(t, bound{Time: 10 * time.Second, Mem: 38 << 20}, nil, dir, small.URL+"/disk.raw")
	if run.Code != 0 {
		t.Fatalf("the next attempt: exit %d %+v", run.Code, r2)
	}
	if left := temporaries(t, dir); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}
