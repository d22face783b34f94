package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// bound is what one hostile case may cost the imager process: wall time
// and peak resident memory above the idle process's. The adversarial
// suites (hostile_*_test.go) give every case one. Memory is counted from
// the idle process because its own footprint is not the input's doing and
// grows with what is linked in: the imager binary idles at about 15 MiB
// with govmomi's SOAP types, the test binary (the child here) at about
// 21 MiB with vcsim as well; before govmomi both idled at about 10 MiB.
type bound struct {
	Time time.Duration
	Mem  int64 // bytes of peak RSS above the idle process's (idleRSS)
}

// boundedRun is one imager child process's outcome.
type boundedRun struct {
	Code           int
	Stdout, Stderr string
	Elapsed        time.Duration
	MaxRSS         int64 // bytes
}

// runBounded runs imager as a child process with stdin (nil: none) and
// fails the test when it outlives b.Time (it is then killed) or its peak
// RSS exceeds b.Mem. The peak is the child's own VmHWM, which it writes
// as it exits: wait4's ru_maxrss would not do, since a child forked with
// CLONE_VM inherits the test process's high-water mark through exec. With BOUNDS_REPORT set to a file, each run appends
// "name<TAB>seconds<TAB>peak bytes" to it: the figures of the closing notes.
func runBounded(t testing.TB, b bound, stdin io.Reader, args ...string) boundedRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), b.Time)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	hwm := filepath.Join(t.TempDir(), "hwm")
	cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1", "IMAGER_TEST_HWM="+hwm)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := boundedRun{Stdout: out.String(), Stderr: errb.String(), Elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s: imager %v still running after %v (killed)\nstderr: %s", t.Name(), args, b.Time, r.Stderr)
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("%s: imager %v: %v", t.Name(), args, err)
	}
	kb, err := os.ReadFile(hwm)
	if err != nil {
		t.Fatalf("%s: imager %v wrote no peak RSS: %v", t.Name(), args, err)
	}
	r.MaxRSS, _ = strconv.ParseInt(string(kb), 10, 64)
	r.MaxRSS <<= 10
	idle := idleRSS(t)
	t.Logf("%s: exit %d in %v, peak RSS %d MiB, %d MiB above the idle process (bound %v, %d MiB)", t.Name(), r.Code, r.Elapsed.Round(time.Millisecond), r.MaxRSS>>20, (r.MaxRSS-idle)>>20, b.Time, b.Mem>>20)
	if r.MaxRSS-idle > b.Mem {
		t.Errorf("%s: peak RSS %d bytes, %d above the idle process's %d: bound %d", t.Name(), r.MaxRSS, r.MaxRSS-idle, idle, b.Mem)
	}
	reportBound(t.Name(), r.Elapsed, r.MaxRSS)
	return r
}

var idle struct {
	once sync.Once
	rss  int64
	err  error
}

// idleRSS is the peak RSS of the child process doing nothing (imager with
// no command: its usage, exit 2), measured once: what every bounded run
// costs before its input costs anything.
func idleRSS(t testing.TB) int64 {
	idle.once.Do(func() {
		hwm := filepath.Join(os.TempDir(), fmt.Sprintf("imager-idle-hwm-%d", os.Getpid()))
		defer os.Remove(hwm)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1", "IMAGER_TEST_HWM="+hwm)
		cmd.Run() // exit 2, the usage: only its footprint matters
		kb, err := os.ReadFile(hwm)
		if err != nil {
			idle.err = fmt.Errorf("the idle imager wrote no peak RSS: %w", err)
			return
		}
		idle.rss, idle.err = strconv.ParseInt(string(kb), 10, 64)
		idle.rss <<= 10
	})
	if idle.err != nil {
		t.Fatalf("%s: %v", t.Name(), idle.err)
	}
	return idle.rss
}

// writeHWM writes the process's peak RSS in KiB (VmHWM) to path; the
// child side of runBounded.
func writeHWM(path string) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			os.WriteFile(path, []byte(strings.TrimSuffix(strings.TrimSpace(v), " kB")), 0o644)
			return
		}
	}
}

func reportBound(name string, elapsed time.Duration, mem int64) {
	path := os.Getenv("BOUNDS_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%.3f\t%d\n", name, elapsed.Seconds(), mem)
}

func TestRunBoundedMeasures(t *testing.T) {
	// The idle footprint is measured, and the bound must be able to fail:
	// a checksum of a 64 MiB file reads it through buffers of several MiB.
	if idle := idleRSS(t); idle <= 1<<20 {
		t.Fatalf("idle imager: peak RSS %d bytes", idle)
	}
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, bytes.Repeat([]byte{0xa5}, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ft := &fakeTB{TB: t}
	r := runBounded(ft, bound{Time: time.Minute, Mem: 1 << 20}, nil, "checksum", f)
	if r.Code != 0 || !ft.failed {
		t.Fatalf("imager checksum: exit %d, peak RSS %d bytes measured, bound failed: %v", r.Code, r.MaxRSS, ft.failed)
	}
}

// fakeTB records failures instead of failing the test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Errorf(format string, a ...any) { f.failed = true }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Logf(format string, a ...any)   {}
func (f *fakeTB) Helper()                        {}
