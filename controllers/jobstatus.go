package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// How an imager Job is doing, read the same way by both reconcilers: its
// terminal conditions, the result its own pods wrote, its progress, and
// why it failed. (Creating Jobs is job.go's; finding the recorded one is
// owned.go's.)

// podReasonEvicted is the kubelet's pod status reason for an eviction.
const podReasonEvicted = "Evicted"

// limitEviction reports whether the kubelet evicted pod for outgrowing
// its own ephemeral-storage limits (its scratch emptyDir or its
// container's limit), which the same source meets again on a fresh Job,
// rather than for the node running short, which it may not.
func limitEviction(pod *corev1.Pod) bool {
	if pod == nil || pod.Status.Reason != podReasonEvicted {
		return false
	}
	m := pod.Status.Message
	return strings.Contains(m, "exceeds the total limit") || strings.Contains(m, "exceeds the limit")
}

// failureOf says why a finished Job did not succeed: imager's result,
// else what became of its last pod, else the Job's own condition.
func failureOf(job *batchv1.Job, res *jobapi.Result, pod *corev1.Pod, failed bool) (reason, msg string) {
	reason, msg = v1alpha1.ReasonNoResult, "Job "+job.Name+" ended without a result"
	switch {
	case res != nil && res.Phase == jobapi.Failed:
		reason, msg = res.Reason, res.Message
		if !res.Permanent && reason != jobapi.ReasonInvalidArguments {
			msg = fmt.Sprintf("%s (gave up after %d attempts)", msg, job.Status.Failed)
		}
	case pod != nil && pod.Status.Reason == podReasonEvicted:
		reason, msg = v1alpha1.ReasonPodEvicted, fmt.Sprintf("Job %s: pod %s was evicted: %s", job.Name, pod.Name, pod.Status.Message)
	case pod != nil:
		if t := terminated(pod); t != nil {
			msg = fmt.Sprintf("Job %s: pod %s exited with code %d (%s)", job.Name, pod.Name, t.ExitCode, t.Reason)
		}
	case failed:
		reason, msg = v1alpha1.ReasonRetriesExhausted, "Job "+job.Name+" failed: "+jobFailureMessage(job)
	}
	// imager redacts its messages already; status and events are read
	// by everyone who can read the image, so make sure.
	return reason, jobapi.RedactURL(msg)
}

// jobFinished reads a Job's terminal conditions.
func jobFinished(job *batchv1.Job) (finished, failed bool) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, false
		case batchv1.JobFailed:
			return true, true
		}
	}
	return false, false
}

func jobFailureMessage(job *batchv1.Job) string {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return c.Reason + ": " + c.Message
		}
	}
	return "unknown reason"
}

// jobResult finds the Job's last finished pod and parses its termination
// message (the imager result).
func jobResult(ctx context.Context, c client.Reader, job *batchv1.Job) (*jobapi.Result, *corev1.Pod, error) {
	pods, err := jobPods(ctx, c, job)
	if err != nil {
		return nil, nil, err
	}
	var last *corev1.Pod
	var lastAt time.Time
	for i := range pods {
		p := &pods[i]
		var at time.Time
		switch t := terminated(p); {
		case t != nil:
			at = t.FinishedAt.Time
		case p.Status.Phase == corev1.PodFailed:
			// Evicted before its container ran, or its status lost.
			at = p.CreationTimestamp.Time
		default:
			continue
		}
		if last == nil || at.After(lastAt) {
			last, lastAt = p, at
		}
	}
	if last == nil {
		return nil, nil, nil
	}
	t := terminated(last)
	if t == nil {
		return nil, last, nil
	}
	res, err := jobapi.Parse(t.Message)
	if err != nil {
		log.FromContext(ctx).Info("pod has no imager result", "pod", last.Name, "error", err.Error())
		return nil, last, nil
	}
	return res, last, nil
}

// jobPods lists the pods job controls, from the manager's cache (c must
// be the manager's client: it looks them up by the indexPodJob index).
func jobPods(ctx context.Context, c client.Reader, job *batchv1.Job) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingFields{indexPodJob: string(job.UID)}); err != nil {
		return nil, fmt.Errorf("list the pods of Job %s: %w", job.Name, err)
	}
	out := pods.Items[:0]
	for _, p := range pods.Items {
		if ownedBy(&p, job) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ownedBy reports whether the Job controller made p for job: labels are
// anyone's to set, so the pod must be controlled by job's UID.
func ownedBy(p *corev1.Pod, job *batchv1.Job) bool {
	return job.UID != "" && controllerJob(p) == string(job.UID)
}

func terminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == containerName && cs.State.Terminated != nil {
			return cs.State.Terminated
		}
	}
	return nil
}

// jobProgress reads the latest progress line of the Job's running pod
// (only a running pod's: a finished one's log is never read).
func jobProgress(ctx context.Context, c client.Reader, logs PodLogReader, job *batchv1.Job) (string, bool) {
	if logs == nil {
		return "", false
	}
	pods, err := jobPods(ctx, c, job)
	if err != nil {
		log.FromContext(ctx).V(1).Info("reading progress", "error", err.Error())
		return "", false
	}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		lines, err := logs.LastLines(ctx, p.Namespace, p.Name, containerName, 10)
		if err != nil {
			// lines may still hold an earlier read's.
			log.FromContext(ctx).V(1).Info("reading progress", "pod", p.Name, "error", err.Error())
		}
		return progressFromLog(lines)
	}
	return "", false
}
