package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Completion is a fact, not a cache. A Job is deleted by its TTL, pods
// are collected, status can be lost (restored without it, or an update
// that never landed): none of that may make a finished image run again.
// So the end of an attempt is recorded on the image's own PVC, beside
// the files it describes, before status says so; a reconcile that finds
// the record for the attempt it is on takes it as the outcome.

// CompletionRecord is the JSON of the AnnResult annotation on an image's
// PVC: how one attempt ended.
type CompletionRecord struct {
	// Image is the UID of the image the record is for: a PVC outlives
	// nothing, but its annotations are anyone's to copy.
	Image types.UID `json:"image"`
	// Job is the name of the attempt's Job (its identity: see attemptSalt).
	Job string `json:"job"`
	// Attempt, Retried and Retries are the attempt's place in status.
	Attempt int32  `json:"attempt,omitempty"`
	Retried string `json:"retried,omitempty"`
	Retries int32  `json:"retries,omitempty"`
	// Result is imager's (for a failure with no result, the controller's
	// reason and message).
	Result jobapi.Result `json:"result"`
}

// maxRecord bounds what is parsed from the annotation: a result's
// message is at most jobapi.MaxMessage bytes.
const maxRecord = 4 * jobapi.MaxMessage

// recordOf returns the completion record on pvc for img, or nil.
func recordOf(pvc *corev1.PersistentVolumeClaim, img *v1alpha1.VMDKImage) *CompletionRecord {
	s := pvc.Annotations[v1alpha1.AnnResult]
	if s == "" || len(s) > maxRecord {
		return nil
	}
	rec := &CompletionRecord{}
	if err := json.Unmarshal([]byte(s), rec); err != nil || rec.Image != img.UID ||
		(rec.Result.Phase != jobapi.Succeeded && rec.Result.Phase != jobapi.Failed) {
		return nil
	}
	return rec
}

// writeRecord sets pvc's completion record (a merge patch: no conflict
// with other writers of the PVC), unless it holds that record already.
func writeRecord(ctx context.Context, c client.Client, pvc *corev1.PersistentVolumeClaim, rec *CompletionRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if pvc.Annotations[v1alpha1.AnnResult] == string(b) {
		return nil
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Annotations[v1alpha1.AnnResult] = string(b)
	if err := c.Patch(ctx, pvc, patch); err != nil {
		return fmt.Errorf("record the result on PVC %s: %w", pvc.Name, err)
	}
	return nil
}

// recordFor is the record of img's current attempt ending with res.
func recordFor(img *v1alpha1.VMDKImage, res *jobapi.Result) *CompletionRecord {
	st := &img.Status
	return &CompletionRecord{Image: img.UID, Job: st.JobName, Attempt: st.Attempt, Retried: st.Retried, Retries: st.Retries, Result: *res}
}

// applyRecord takes a record as the image's outcome.
func (r *VMDKImageReconciler) applyRecord(img *v1alpha1.VMDKImage, rec *CompletionRecord) {
	st := &img.Status
	st.JobName, st.Attempt, st.Retried, st.Retries = rec.Job, rec.Attempt, rec.Retried, rec.Retries
	res := &rec.Result
	if res.Phase == jobapi.Succeeded {
		r.setReady(img, res)
		return
	}
	r.setFailed(img, res.Reason, res.Message)
}

// setReady records a successful attempt in status.
func (r *VMDKImageReconciler) setReady(img *v1alpha1.VMDKImage, res *jobapi.Result) {
	st := &img.Status
	st.Phase = v1alpha1.PhaseReady
	st.Progress = "100%"
	st.LastError = ""
	setIdentity(st, res)
	// What was read, kept beside what was written (a refresh re-reads
	// only the latter).
	st.VSphere = vsphereStatus(res.VSphere)
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "Job "+st.JobName+" finished")
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, fmt.Sprintf("%s image, CID %s%s", res.CreateType, res.CID, vsphereReadyNote(res.VSphere)))
}

// setFailed records an attempt that failed for good in status.
func (r *VMDKImageReconciler) setFailed(img *v1alpha1.VMDKImage, reason, msg string) {
	st := &img.Status
	st.Phase = v1alpha1.PhaseFailed
	st.LastError = reason + ": " + msg
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, msg)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
}

// setIdentity copies what an image is from imager's result.
func setIdentity(st *v1alpha1.VMDKImageStatus, res *jobapi.Result) {
	st.CID, st.ParentCID, st.CreateType = res.CID, res.ParentCID, res.CreateType
	st.VirtualSize, st.AllocatedBytes = res.VirtualSize, res.AllocatedBytes
	st.Capacity = forPeople(res.VirtualSize)
	st.Allocated = forPeople(res.AllocatedBytes)
}

// forPeople prints a byte count as kubectl users read sizes ("10Gi",
// "12Ki"; exact when it is not a whole binary unit).
func forPeople(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}
