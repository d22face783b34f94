package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
	r.reads.now = func() time.Time { return now }

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
	r.reads.mu.Lock()
	_, a := r.reads.last["ns/a/imager"]
	_, c := r.reads.last["ns/c/imager"]
	r.reads.mu.Unlock()
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

// countingReader counts the lists made through it.
type countingReader struct {
	client.Reader
	lists int
}

func (c *countingReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	c.lists++
	if l, ok := list.(*corev1.EventList); ok {
		l.Items = []corev1.Event{{Reason: "FailedMount"}}
	}
	return nil
}

func (c *countingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	c.lists += 100 // a Get is never rationed: counted apart
	return nil
}

func TestRationedEventListsOncePerInterval(t *testing.T) {
	ctx := context.Background()
	next := &countingReader{}
	r := rationEventLists(next, time.Hour)
	byUID := func(uid string) client.ListOption {
		return client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.uid", uid)}
	}
	for range 20 {
		l := &corev1.EventList{}
		if err := r.List(ctx, l, client.InNamespace("ns"), byUID("a")); err != nil || len(l.Items) != 1 {
			t.Fatalf("List = %v, %d events", err, len(l.Items))
		}
	}
	if next.lists != 1 {
		t.Fatalf("20 lists of one selector made %d requests, want 1", next.lists)
	}
	r.List(ctx, &corev1.EventList{}, client.InNamespace("ns"), byUID("b"))
	r.List(ctx, &corev1.EventList{}, client.InNamespace("other"), byUID("a"))
	if next.lists != 3 {
		t.Fatalf("other selectors and namespaces: %d requests, want 3", next.lists)
	}
	r.List(ctx, &corev1.PodList{}, client.InNamespace("ns"))
	r.List(ctx, &corev1.PodList{}, client.InNamespace("ns"))
	r.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "x"}, &corev1.PersistentVolumeClaim{})
	if next.lists != 105 {
		t.Fatalf("lists of other kinds and gets go through: %d, want 105", next.lists)
	}
}
