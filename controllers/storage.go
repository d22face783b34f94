package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// The image's PVC: made once, grown when spec.storage.size grows, and
// watched for what a user must know (a resize the class cannot do, a
// volume lost). The Storage condition says which.

// ensurePVC gets or creates the image's PVC, and grows its request when
// spec.storage.size grew. A recorded PVC that is Lost or being deleted
// cannot hold the image: the first is deleted (a fresh one follows), and
// the caller waits for either to be gone.
func (r *VMDKImageReconciler) ensurePVC(ctx context.Context, img *v1alpha1.VMDKImage, sourceSize int64) (*corev1.PersistentVolumeClaim, *waitReason, error) {
	pvc, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnClaimUID, pvcFor(img, nameFor(img, "disk"), sourceSize))
	if err != nil || created {
		return pvc, nil, err
	}
	if pvc.Status.Phase == corev1.ClaimLost && pvc.DeletionTimestamp.IsZero() {
		if err := deleteChild(ctx, r.Client, img, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: pvc.Name}}, v1alpha1.AnnClaimUID); err != nil {
			return nil, nil, fmt.Errorf("delete the lost PVC %s: %w", pvc.Name, err)
		}
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventWaiting, "PVC %s lost its volume: deleted, a new one will hold the image", pvc.Name)
	}
	if pvc.Status.Phase == corev1.ClaimLost || !pvc.DeletionTimestamp.IsZero() {
		return nil, &waitReason{v1alpha1.ReasonClaimLost, fmt.Sprintf("waiting for PVC %s, which lost its volume or is being deleted, to be gone", pvc.Name), false}, nil
	}
	if err := r.storageState(ctx, img, pvc); err != nil && !errors.Is(err, errQuotaRecheck) {
		return nil, nil, err
	}
	return pvc, nil, nil
}

// claimLost says why a finished image's PVC no longer holds it, or "".
func claimLost(pvc *corev1.PersistentVolumeClaim, err error) string {
	switch {
	case apierrors.IsNotFound(err):
		return "the image's PVC is gone: its files with it"
	case err != nil:
		return ""
	case pvc.Status.Phase == corev1.ClaimLost:
		return fmt.Sprintf("PVC %s is Lost: its volume %s is gone", pvc.Name, pvc.Spec.VolumeName)
	case !pvc.DeletionTimestamp.IsZero():
		return fmt.Sprintf("PVC %s is being deleted", pvc.Name)
	}
	return ""
}

// markClaimLost fails a finished image whose PVC is gone, once.
func (r *VMDKImageReconciler) markClaimLost(img *v1alpha1.VMDKImage, msg string) {
	msg += fmt.Sprintf(": set the %s annotation to a new value to make the image again", v1alpha1.AnnotationRetry)
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonClaimLost {
		r.event(img, corev1.EventTypeWarning, v1alpha1.ReasonClaimLost, "%s", msg)
	}
	r.setFailed(img, v1alpha1.ReasonClaimLost, msg)
	r.setCondition(img, v1alpha1.ConditionStorage, metav1.ConditionFalse, v1alpha1.ReasonClaimLost, msg)
}

// errQuotaRecheck: a resize waits on a ResourceQuota; the caller looks
// again after quotaRecheck (nothing of ours watches quotas).
var errQuotaRecheck = errors.New("a resize waits on a ResourceQuota")

// storageState grows a bound PVC's request to spec.storage.size
// (Kubernetes expands only bound claims; an unbound one is grown once it
// binds) and sets the Storage condition from what the PVC says of it.
func (r *VMDKImageReconciler) storageState(ctx context.Context, img *v1alpha1.VMDKImage, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Status.Phase != corev1.ClaimBound {
		r.storageCondition(img, metav1.ConditionFalse, v1alpha1.ReasonClaimPending, fmt.Sprintf("PVC %s is not bound yet", pvc.Name))
		return nil
	}
	want := img.Spec.Storage.Size
	if want == nil {
		r.storageCondition(img, metav1.ConditionTrue, v1alpha1.ReasonClaimBound, fmt.Sprintf("PVC %s is bound", pvc.Name))
		return nil
	}
	if have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; want.Cmp(have) > 0 {
		grown := pvc.DeepCopy()
		patch := client.MergeFrom(pvc.DeepCopy())
		grown.Spec.Resources.Requests[corev1.ResourceStorage] = *want
		switch err := r.Patch(ctx, grown, patch); {
		case quotaBlocker(err) != nil:
			// The quota may be raised: looked at again, calmly.
			b := quotaBlocker(err)
			r.storageCondition(img, metav1.ConditionFalse, b.reason, fmt.Sprintf("PVC %s cannot grow to %s: %s", pvc.Name, want, b.message))
			return errQuotaRecheck
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			// The class cannot expand (or the claim cannot be): a
			// retry changes nothing until the user does.
			r.storageCondition(img, metav1.ConditionFalse, v1alpha1.ReasonExpansionUnsupported,
				fmt.Sprintf("PVC %s cannot grow to %s: %s", pvc.Name, want, apiMessage(err)))
			return nil
		case err != nil:
			return fmt.Errorf("grow PVC %s to %s: %w", pvc.Name, want, err)
		}
		pvc = grown
	}
	status, reason, msg := resizeState(pvc, want.String())
	r.storageCondition(img, status, reason, msg)
	return nil
}

// resizeState reads a bound PVC's resize from its conditions, its
// resources' resize status and its capacity.
func resizeState(pvc *corev1.PersistentVolumeClaim, want string) (metav1.ConditionStatus, string, string) {
	for _, c := range pvc.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case corev1.PersistentVolumeClaimControllerResizeError, corev1.PersistentVolumeClaimNodeResizeError:
			return metav1.ConditionFalse, v1alpha1.ReasonResizeFailed, fmt.Sprintf("PVC %s failed to grow to %s: %s", pvc.Name, want, c.Message)
		}
	}
	switch pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] {
	case corev1.PersistentVolumeClaimControllerResizeInfeasible, corev1.PersistentVolumeClaimNodeResizeInfeasible:
		return metav1.ConditionFalse, v1alpha1.ReasonResizeFailed, fmt.Sprintf("PVC %s cannot grow to %s: the storage refused the size", pvc.Name, want)
	}
	for _, c := range pvc.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case corev1.PersistentVolumeClaimFileSystemResizePending:
			return metav1.ConditionFalse, v1alpha1.ReasonFileSystemResizePending,
				fmt.Sprintf("PVC %s's volume grew to %s; its filesystem grows when a pod next mounts it", pvc.Name, want)
		case corev1.PersistentVolumeClaimResizing:
			return metav1.ConditionFalse, v1alpha1.ReasonResizing, fmt.Sprintf("PVC %s is growing to %s", pvc.Name, want)
		}
	}
	capacity := pvc.Status.Capacity[corev1.ResourceStorage]
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !capacity.IsZero() && capacity.Cmp(request) < 0 {
		return metav1.ConditionFalse, v1alpha1.ReasonResizing, fmt.Sprintf("PVC %s is growing to %s (capacity %s so far)", pvc.Name, want, capacity.String())
	}
	return metav1.ConditionTrue, v1alpha1.ReasonResized, fmt.Sprintf("PVC %s is bound and as large as storage.size (%s)", pvc.Name, want)
}

// storageCondition sets the Storage condition, with a warning event when
// it turns to a failure.
func (r *VMDKImageReconciler) storageCondition(img *v1alpha1.VMDKImage, status metav1.ConditionStatus, reason, msg string) {
	failure := reason == v1alpha1.ReasonExpansionUnsupported || reason == v1alpha1.ReasonResizeFailed || reason == v1alpha1.ReasonQuotaExceeded
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionStorage); failure && (c == nil || c.Reason != reason || c.Message != msg) {
		r.event(img, corev1.EventTypeWarning, reason, "%s", msg)
	}
	r.setCondition(img, v1alpha1.ConditionStorage, status, reason, msg)
}

// apiMessage is an API error's message without its status wrapping.
func apiMessage(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok && s.Status().Message != "" {
		return s.Status().Message
	}
	return err.Error()
}
