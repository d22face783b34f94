package controllers

import (
	"bufio"
	"context"
	"encoding/json"
	"strconv"
	"strings"

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
