package vmdk

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// bound is what one hostile case may cost: wall time and peak heap growth
// over the heap in use when it started. The adversarial suites
// (hostile_*_test.go) give every case one.
type bound struct {
	Time time.Duration
	Mem  int64 // bytes
}

// withinBound runs f under b and fails the test when f takes longer than b.Time
// (without waiting for it) or its peak heap grows more than b.Mem. It
// returns f's error for the caller to classify. With BOUNDS_REPORT set to a
// file, each case appends "name<TAB>seconds<TAB>peak bytes" to it: the
// figures of the closing notes.
func withinBound(t testing.TB, b bound, f func() error) error {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	var peak uint64
	var mu sync.Mutex
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		peak = max(peak, m.HeapAlloc)
		mu.Unlock()
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sample()
			}
		}
	}()

	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(b.Time):
		// Fail now, but let f finish (it may still use t): a test that
		// ends while f runs would panic the whole binary.
		t.Errorf("%s: still running after %v", t.Name(), b.Time)
		select {
		case err = <-done:
		case <-time.After(max(4*b.Time, 10*time.Second)):
			close(stop)
			t.Fatalf("%s: abandoned, still running %v after its bound", t.Name(), max(4*b.Time, 10*time.Second))
		}
	}
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	sample()
	grew := int64(peak) - int64(base)
	if grew < 0 {
		grew = 0
	}
	t.Logf("%s: %v, peak heap +%d KiB (bound %v, %d KiB)", t.Name(), elapsed.Round(time.Millisecond), grew>>10, b.Time, b.Mem>>10)
	if grew > b.Mem {
		t.Errorf("%s: peak heap grew %d bytes, bound %d", t.Name(), grew, b.Mem)
	}
	reportBound(t.Name(), elapsed, grew)
	return err
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

func TestWithinMeasures(t *testing.T) {
	// The bound itself must be able to fail: a case that allocates and
	// holds 64 MiB is seen as at least that.
	ft := &fakeTB{TB: t}
	var hold []byte
	withinBound(ft, bound{Time: 10 * time.Second, Mem: 1 << 20}, func() error {
		hold = make([]byte, 64<<20)
		for i := range hold {
			hold[i] = 1
		}
		return nil
	})
	runtime.KeepAlive(hold)
	if !ft.failed {
		t.Fatal("64 MiB held within a 1 MiB bound did not fail")
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
