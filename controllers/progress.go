package controllers

import (
	"bufio"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// PodLogReader reads the end of a container's log: where a running imager
// prints its progress lines.
type PodLogReader interface {
	LastLines(ctx context.Context, namespace, pod, container string, n int64) ([]string, error)
}

// ClientsetLogReader reads pod logs through the API server.
type ClientsetLogReader struct{ Clientset kubernetes.Interface }

// LastLines returns up to n of the container's last log lines.
func (c ClientsetLogReader) LastLines(ctx context.Context, namespace, pod, container string, n int64) ([]string, error) {
	req := c.Clientset.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: &n, LimitBytes: ptr.To[int64](64 << 10)})
	rc, err := req.Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var lines []string
	s := bufio.NewScanner(rc)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	return lines, s.Err()
}

// progressFromLog finds the newest imager progress line among log lines
// (stderr lines are interleaved) and formats it as "37.5%".
func progressFromLog(lines []string) (string, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "{") || !strings.Contains(l, `"progress"`) {
			continue
		}
		var p jobapi.Progress
		if err := json.Unmarshal([]byte(l), &p); err != nil || p.Progress < 0 || p.Progress > 100 {
			continue
		}
		return strconv.FormatFloat(p.Progress, 'f', 1, 64) + "%", true
	}
	return "", false
}

// Log reads are rationed: a read goes through the API server to the
// node's kubelet, and a running Job's reconciles come as often as its
// pods, its PVC or its image change (a storm of them, at times). Each pod's
// log is read at most once per interval; in between, the lines last read
// are served again. (A Job runs one pod at a time: per pod is per Job.)
// Each read is bounded in time as well as in size (the reader's tailLines
// and limitBytes).

// logReadTimeout bounds one read of a pod's log.
const logReadTimeout = 5 * time.Second

// rationedLogs is a PodLogReader reading through next at most once per
// interval per pod, each read within timeout.
type rationedLogs struct {
	next    PodLogReader
	timeout time.Duration
	reads   *rations[[]string]
}

func rationLogs(next PodLogReader, interval, timeout time.Duration) *rationedLogs {
	return &rationedLogs{next: next, timeout: timeout, reads: newRations[[]string](interval)}
}

// LastLines reads the pod's last n lines, unless it was read less than an
// interval ago: then the lines of that read. A failed read returns the
// lines of the one before it, if any, with its error.
func (r *rationedLogs) LastLines(ctx context.Context, namespace, pod, container string, n int64) ([]string, error) {
	return r.reads.get(namespace+"/"+pod+"/"+container, func() ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		return r.next.LastLines(ctx, namespace, pod, container, n)
	})
}

// rations serves each key's value at most once per interval from read,
// and the last value read in between.
type rations[T any] struct {
	interval time.Duration
	now      func() time.Time

	mu     sync.Mutex
	last   map[string]ration[T]
	pruned time.Time
}

// ration is one key's last read: when, and what it returned.
type ration[T any] struct {
	at  time.Time
	val T
	err error
}

func newRations[T any](interval time.Duration) *rations[T] {
	return &rations[T]{interval: interval, now: time.Now, last: map[string]ration[T]{}}
}

// get returns key's value read less than an interval ago, or reads it. A
// failed read returns the value of the one before it, if any, with its
// error.
func (r *rations[T]) get(key string, read func() (T, error)) (T, error) {
	now := r.now()
	r.mu.Lock()
	prev, seen := r.last[key]
	if seen && now.Sub(prev.at) < r.interval {
		r.mu.Unlock()
		return prev.val, prev.err
	}
	// Taken before reading: concurrent reconciles asking for the same
	// key meanwhile get the previous value.
	r.last[key] = ration[T]{at: now, val: prev.val}
	r.prune(now)
	r.mu.Unlock()

	val, err := read()
	if err != nil {
		val = prev.val
	}
	r.mu.Lock()
	r.last[key] = ration[T]{at: now, val: val, err: err}
	r.mu.Unlock()
	return val, err
}

// prune forgets keys not read for ten intervals (their objects are done
// with), looking at most once an interval. r.mu is held.
func (r *rations[T]) prune(now time.Time) {
	if now.Sub(r.pruned) < r.interval {
		return
	}
	r.pruned = now
	for k, l := range r.last {
		if now.Sub(l.at) > 10*r.interval {
			delete(r.last, k)
		}
	}
}
