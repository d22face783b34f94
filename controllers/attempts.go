package controllers

import (
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// An image's work is done in attempts. Each attempt has its own Job,
// named from the image's UID and the attempt's identity in status (the
// retry token it was started for, and the controller's retry count), so
// a new attempt never meets the old one's Job and the same attempt always
// finds its own. The first attempt keeps the plain name (UID alone).
//
//	Failed Job, transient, retries left  -> RetryScheduled, then retries+1
//	Failed Job, permanent or retries out -> Failed (recorded on the PVC)
//	Failed image, new retry token        -> a fresh attempt, retries 0

// attemptSalt is what the current attempt's Job name is derived from.
func attemptSalt(img *v1alpha1.VMDKImage) string {
	st := &img.Status
	if st.Retried == "" && st.Retries == 0 {
		return string(img.UID)
	}
	return string(img.UID) + "/" + st.Retried + "/" + strconv.Itoa(int(st.Retries))
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
// msg) of job, then moves the image to its next attempt.
func (r *VMDKImageReconciler) scheduleRetry(img *v1alpha1.VMDKImage, job *batchv1.Job, reason, msg string) ctrl.Result {
	st := &img.Status
	policy := r.Imager.Retry
	next := st.Retries + 1
	st.Phase = phaseOf(operationOf(img))
	st.LastError = reason + ": " + msg
	wait := policy.Due(next, jobFailedAt(job), time.Now())
	if wait <= 0 {
		// The next attempt: its Job is created by the next reconcile,
		// from the status this one writes.
		st.Retries = next
		st.Progress = ""
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetrying, "retry %d of %d after: %s: %s", next, policy.Limit, reason, msg)
		return ctrl.Result{RequeueAfter: nextStep}
	}
	text := fmt.Sprintf("Job %s failed (%s: %s); retry %d of %d in %s", job.Name, reason, msg, next, policy.Limit, wait.Round(time.Second))
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
	st.Retried = token
	if st.Phase != v1alpha1.PhaseFailed {
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetryIgnored, "retry %q: the image is %s, there is no failure to re-run", token, orPending(st.Phase))
		return false
	}
	st.Retries = 0
	st.Phase = v1alpha1.PhasePending
	st.Progress = ""
	msg := fmt.Sprintf("retry %q requested after: %s", token, st.LastError)
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRetryRequested, msg)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRetryRequested, msg)
	r.event(img, corev1.EventTypeNormal, v1alpha1.EventRetrying, "%s", msg)
	return true
}
