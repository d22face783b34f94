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
	"testing"
	"time"
)

// bound is what one hostile case may cost the imager process: wall time
// and peak resident memory. The adversarial suites (hostile_*_test.go)
// give every case one.
type bound struct {
	Time time.Duration
	Mem  int64 // bytes of peak RSS
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
	t.Logf("%s: exit %d in %v, peak RSS %d MiB (bound %v, %d MiB)", t.Name(), r.Code, r.Elapsed.Round(time.Millisecond), r.MaxRSS>>20, b.Time, b.Mem>>20)
	if r.MaxRSS > b.Mem {
		t.Errorf("%s: peak RSS %d bytes, bound %d", t.Name(), r.MaxRSS, b.Mem)
	}
	reportBound(t.Name(), r.Elapsed, r.MaxRSS)
	return r
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
	// The bound must be able to fail: any real process exceeds 1 MiB of RSS.
	ft := &fakeTB{TB: t}
	r := runBounded(ft, bound{Time: time.Minute, Mem: 1 << 20}, nil, "info")
	if r.MaxRSS <= 1<<20 || !ft.failed {
		t.Fatalf("imager info: peak RSS %d bytes measured, bound failed: %v", r.MaxRSS, ft.failed)
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
