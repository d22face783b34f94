package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// countingLogs serves fixed lines (or err) and counts reads per pod; with
// block set, a read waits for its context to end.
type countingLogs struct {
	mu    sync.Mutex
	reads map[string]int
	lines []string
	err   error
	block bool
}

func (c *countingLogs) LastLines(ctx context.Context, _, pod, _ string, _ int64) ([]string, error) {
	c.mu.Lock()
	c.reads[pod]++
	lines, err, block := c.lines, c.err, c.block
	c.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return lines, nil
}

func (c *countingLogs) count(pod string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[pod]
}

func TestRationedLogsReadEachPodOncePerInterval(t *testing.T) {
	ctx := context.Background()
	next := &countingLogs{reads: map[string]int{}, lines: []string{`{"progress":10}`}}
	r := rationLogs(next, 5*time.Second, time.Second)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }

	for range 50 { // a reconcile storm
		lines, err := r.LastLines(ctx, "ns", "a", "imager", 10)
		if err != nil || len(lines) != 1 {
			t.Fatalf("LastLines = %q, %v", lines, err)
		}
	}
	if got := next.count("a"); got != 1 {
		t.Fatalf("50 calls within an interval read the log %d times, want 1", got)
	}
	if _, err := r.LastLines(ctx, "ns", "b", "imager", 10); err != nil || next.count("b") != 1 {
		t.Fatalf("another pod is read on its own: %d reads, %v", next.count("b"), err)
	}
	now = now.Add(4 * time.Second)
	r.LastLines(ctx, "ns", "a", "imager", 10)
	if got := next.count("a"); got != 1 {
		t.Fatalf("read again %d times before the interval ended", got-1)
	}
	now = now.Add(time.Second)
	next.lines = []string{`{"progress":20}`}
	lines, _ := r.LastLines(ctx, "ns", "a", "imager", 10)
	if next.count("a") != 2 || len(lines) != 1 || lines[0] != `{"progress":20}` {
		t.Fatalf("after the interval: %d reads, lines %q; want 2 and the new line", next.count("a"), lines)
	}

	// A failed read keeps serving the lines read before it.
	now = now.Add(5 * time.Second)
	next.err = errors.New("kubelet unreachable")
	lines, err := r.LastLines(ctx, "ns", "a", "imager", 10)
	if err == nil || len(lines) != 1 || lines[0] != `{"progress":20}` {
		t.Fatalf("failed read: %q, %v; want the earlier lines and the error", lines, err)
	}

	// Pods not read for ten intervals are forgotten.
	now = now.Add(time.Minute)
	r.LastLines(ctx, "ns", "c", "imager", 10)
	r.mu.Lock()
	_, a := r.last["ns/a/imager"]
	_, c := r.last["ns/c/imager"]
	r.mu.Unlock()
	if a || !c {
		t.Fatalf("after a minute: pod a remembered %v (want false), pod c %v (want true)", a, c)
	}
}

func TestRationedLogsTimeOut(t *testing.T) {
	next := &countingLogs{reads: map[string]int{}, block: true}
	r := rationLogs(next, 5*time.Second, 50*time.Millisecond)
	start := time.Now()
	_, err := r.LastLines(context.Background(), "ns", "stuck", "imager", 10)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the read's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a stuck read took %v", d)
	}
}
