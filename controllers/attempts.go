package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// An image's work is done in attempts, numbered from 0 in
// status.attempt: every fresh attempt (a controller retry, or the retry
// annotation) takes the next number, and its Job is named from the
// image's UID and that number. So a new attempt never meets an old one's
// Job, the same attempt always finds its own, and a token reused later
// makes no old name again. The first attempt keeps the plain name (UID
// alone). The number is also on the Job (annAttempt), from which a lost
// status is restored.
//
//	Job failed, transient, retries left   -> RetryScheduled, then the next attempt
//	Job failed, permanent or retries out  -> Failed (recorded on the PVC)
//	Job gone before its end was seen      -> read back; else the next attempt
//	Failed image, new retry token         -> the next attempt, retries 0

// annAttempt on an image's Job: the attempt it runs.
const annAttempt = "storage.vmdkpop.io/attempt"

// maxAttempts bounds an attempt number read back from a Job.
const maxAttempts = 1 << 20

// attemptSalt is what the current attempt's Job name is derived from.
func attemptSalt(img *v1alpha1.VMDKImage) string {
	if img.Status.Attempt == 0 {
		return string(img.UID)
	}
	return string(img.UID) + "/attempt/" + strconv.Itoa(int(img.Status.Attempt))
}

// restoreAttempt finds, after status was lost, the attempt under way: the
// one of the Job whose UID the image recorded (its number is on it).
func (r *VMDKImageReconciler) restoreAttempt(ctx context.Context, img *v1alpha1.VMDKImage) error {
	uid := types.UID(img.Annotations[v1alpha1.AnnJobUID])
	if uid == "" {
		return nil
	}
	jobs := &batchv1.JobList{}
	if err := r.List(ctx, jobs, client.InNamespace(img.Namespace), client.MatchingLabels{v1alpha1.LabelImage: img.Name}); err != nil {
		return err
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		if j.UID != uid {
			continue
		}
		if n, err := strconv.Atoi(j.Annotations[annAttempt]); err == nil && n >= 0 && n < maxAttempts {
			img.Status.Attempt = int32(n)
			img.Status.JobName = j.Name
		}
	}
	return nil
}

// jobMadeAndGone reports whether the current attempt's Job (named name,
// not found) was made and has gone. The Job the image recorded is the
// last one made: if it still exists, it is an earlier attempt's (this
// one's Job is yet to be made); if it is gone, it was this attempt's,
// unless status says the image was on another Job (an earlier attempt's,
// gone since). Only the UID annotation is needed, which is written when
// the Job is made, so a status update lost in between changes nothing.
func (r *VMDKImageReconciler) jobMadeAndGone(ctx context.Context, img *v1alpha1.VMDKImage, name string) (bool, error) {
	uid := types.UID(img.Annotations[v1alpha1.AnnJobUID])
	if uid == "" {
		return false, nil
	}
	if img.Status.JobName == name {
		return true, nil
	}
	jobs := &batchv1.JobList{}
	if err := r.List(ctx, jobs, client.InNamespace(img.Namespace), client.MatchingLabels{v1alpha1.LabelImage: img.Name}); err != nil {
		return false, err
	}
	for i := range jobs.Items {
		if jobs.Items[i].UID == uid {
			return false, nil
		}
	}
	return img.Status.JobName == "", nil
}

// permanentFailure reports whether a failed attempt must not be retried:
// imager said the same input fails the same way, or refused its command
// line. Everything else (no result, an evicted pod, a network that gave
// out) may pass on a fresh Job.
func permanentFailure(res *jobapi.Result) bool {
	return res != nil && res.Phase == jobapi.Failed && (res.Permanent || res.Reason == jobapi.ReasonInvalidArguments)
}

// jobFailedAt is when a finished Job failed (its Failed condition's
// transition): retries are timed from it, so the delay survives a
// manager restart with nothing else recorded.
func jobFailedAt(job *batchv1.Job) time.Time {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return job.CreationTimestamp.Time
}

// finalFailure reports whether a failed attempt ends the image's work:
// a permanent failure, or no retries left.
func (r *VMDKImageReconciler) finalFailure(img *v1alpha1.VMDKImage, res *jobapi.Result) bool {
	return permanentFailure(res) || img.Status.Retries >= r.Imager.Retry.Limit
}

// finalMessage is msg, saying so when the retries ran out.
func (r *VMDKImageReconciler) finalMessage(res *jobapi.Result, msg string) string {
	if permanentFailure(res) || r.Imager.Retry.Limit == 0 {
		return msg
	}
	return fmt.Sprintf("%s; no retries left (all %d used: set the %s annotation to a new value to try again)", msg, r.Imager.Retry.Limit, v1alpha1.AnnotationRetry)
}

// scheduleRetry waits out the backoff after a transient failure (reason,
// msg) of Job job at failedAt (zero: no wait), then moves the image to
// its next attempt.
func (r *VMDKImageReconciler) scheduleRetry(img *v1alpha1.VMDKImage, failedAt time.Time, job, reason, msg string) ctrl.Result {
	st := &img.Status
	policy := r.Imager.Retry
	next := st.Retries + 1
	st.Phase = phaseOf(operationOf(img))
	st.LastError = reason + ": " + msg
	var wait time.Duration
	if !failedAt.IsZero() {
		wait = policy.Due(next, failedAt, time.Now())
	}
	if wait <= 0 {
		// The next attempt: its Job is created by the next reconcile,
		// from the status this one writes.
		st.Retries = next
		st.Attempt++
		st.Progress = ""
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetrying, "retry %d of %d after: %s: %s", next, policy.Limit, reason, msg)
		return ctrl.Result{RequeueAfter: nextStep}
	}
	text := fmt.Sprintf("Job %s failed (%s: %s); retry %d of %d in %s", job, reason, msg, next, policy.Limit, wait.Round(time.Second))
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionProgressing); c == nil || c.Reason != v1alpha1.ReasonRetryScheduled {
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventAttemptFailed, "%s", text)
	}
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRetryScheduled, text)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	return ctrl.Result{RequeueAfter: wait}
}

// retryRequested starts a fresh attempt at a Failed image whose retry
// annotation holds a token not seen yet; it reports whether it did. On
// an image that did not fail, the token is only acknowledged.
func (r *VMDKImageReconciler) retryRequested(img *v1alpha1.VMDKImage) bool {
	st := &img.Status
	token := img.Annotations[v1alpha1.AnnotationRetry]
	if token == "" || token == st.Retried {
		return false
	}
	// Acknowledged whatever the phase; only a Failed image gets a new
	// attempt (a running one keeps its Job, a Ready one has nothing to
	// re-run).
	st.Retried = token
	if st.Phase != v1alpha1.PhaseFailed {
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetryIgnored, "retry %q: the image is %s, there is no failure to re-run", token, orPending(st.Phase))
		return false
	}
	st.Attempt++
	st.Retries = 0
	st.Phase = v1alpha1.PhasePending
	st.Progress = ""
	msg := fmt.Sprintf("retry %q requested after: %s", token, st.LastError)
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRetryRequested, msg)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRetryRequested, msg)
	r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetrying, "%s", msg)
	return true
}
