package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// A population's lifecycle, recorded on the user's PVC (the only object
// that lives as long as the population, and survives a manager restart):
// attempt n has the prime PVC and Job named for n; a failed attempt is
// recorded once (AnnPopFailedAt) and then only waits for its retry
// (AnnPopRetryAt) or the user's; a prime PVC deleted or replaced mid-way
// ends the attempt, and the next one starts with a new prime and Job.

// attemptOf is the PVC's current attempt number.
func attemptOf(pvc *corev1.PersistentVolumeClaim) int {
	n, _ := strconv.Atoi(pvc.Annotations[v1alpha1.AnnPopAttempt])
	return max(n, 0)
}

// retriesOf is how many controller retries the PVC has had.
func retriesOf(pvc *corev1.PersistentVolumeClaim) int32 {
	n, _ := strconv.ParseInt(pvc.Annotations[v1alpha1.AnnPopRetries], 10, 32)
	return int32(max(n, 0))
}

// primeName derives the names of the current attempt's prime PVC and Job
// (kind "prime" or "populate") from the user PVC's UID: stable across
// reconciles, new for each attempt, and at most 63 characters.
func primeName(pvc *corev1.PersistentVolumeClaim, kind string) string {
	name := kind + "-" + string(pvc.UID)
	if n := attemptOf(pvc); n > 0 {
		name += "-" + strconv.Itoa(n)
	}
	return name
}

// populating reports whether pvc's population is under way and reads its
// image: started (a prime recorded), not done, not being deleted, and not
// failed for good. An attempt waiting for its retry counts: it reads the
// image again.
func populating(pvc *corev1.PersistentVolumeClaim) bool {
	a := pvc.Annotations
	switch {
	case !pvc.DeletionTimestamp.IsZero(), pvc.Status.Phase == corev1.ClaimBound, a[v1alpha1.AnnPhase] == v1alpha1.PopSucceeded:
		return false
	case a[v1alpha1.AnnPopFailedAt] != "":
		return a[v1alpha1.AnnPopRetryAt] != ""
	}
	return a[v1alpha1.AnnPrimeUID] != ""
}

// populationsOf lists the PVCs in ns populating from image (see
// populating), as "PersistentVolumeClaim/name". The image's finalizer
// reads them live (c is the APIReader): the populator decides to start
// from a cached Ready image, and the prime it records may not be in the
// cache yet when the finalizer runs. A live list cannot use the cache's
// indexDataSource index, so the namespace's PVCs are filtered here.
func populationsOf(ctx context.Context, c client.Reader, ns, image string) ([]string, error) {
	list := &corev1.PersistentVolumeClaimList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("list the PVCs populated from image %s: %w", image, err)
	}
	var out []string
	for i := range list.Items {
		if name, ok := dataSourceImage(&list.Items[i]); ok && name == image && populating(&list.Items[i]) {
			out = append(out, "PersistentVolumeClaim/"+list.Items[i].Name)
		}
	}
	return out, nil
}

// imageGoing reports whether image, read live, is being deleted or gone:
// the populator's last look before it starts a Job reading it. The
// prime is recorded first, so an image finalizer that has not seen it
// yet (and lets the image go) ran after the deletion this read sees.
func (r *PopulatorReconciler) imageGoing(ctx context.Context, ns, image string) (bool, error) {
	if r.APIReader == nil {
		return false, nil
	}
	img := &v1alpha1.VMDKImage{}
	switch err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: image}, img); {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read image %s live: %w", image, err)
	}
	return !img.DeletionTimestamp.IsZero(), nil
}

// primeLost reports whether the recorded prime PVC of the current attempt
// was deleted or replaced. The cache may lag behind the prime just
// created, so a prime missing from it is looked for live first.
func (r *PopulatorReconciler) primeLost(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (bool, error) {
	uid := types.UID(pvc.Annotations[v1alpha1.AnnPrimeUID])
	if uid == "" {
		return false, nil
	}
	key := types.NamespacedName{Namespace: pvc.Namespace, Name: primeName(pvc, "prime")}
	prime := &corev1.PersistentVolumeClaim{}
	if err := r.Get(ctx, key, prime); err == nil && prime.UID == uid && prime.DeletionTimestamp.IsZero() {
		return false, nil
	} else if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	if r.APIReader != nil {
		// The PVC too: the prime's UID may have been recorded by a
		// restart the cache has not seen yet.
		live := &corev1.PersistentVolumeClaim{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(pvc), live); err != nil {
			return false, fmt.Errorf("read PVC %s live: %w", pvc.Name, err)
		}
		if live.Annotations[v1alpha1.AnnPrimeUID] != string(uid) || live.Annotations[v1alpha1.AnnPopAttempt] != pvc.Annotations[v1alpha1.AnnPopAttempt] {
			return false, errStale
		}
		switch err := r.APIReader.Get(ctx, key, prime); {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("read prime PVC %s live: %w", key.Name, err)
		}
	}
	return prime.UID != uid || !prime.DeletionTimestamp.IsZero(), nil
}

// errStale: the cached PVC is behind the live one; the next reconcile
// reads it again.
var errStale = fmt.Errorf("the cached PVC is out of date")

// Why a new attempt starts.
const (
	restartPrimeLost = "the prime PVC was deleted or replaced"
	restartRetry     = "retry"
	restartUser      = "the retry annotation"
	restartJobGone   = "its image is being deleted and no Job reads it"
)

// restart ends the current attempt (its Job and prime PVC are deleted)
// and starts the next one, whose prime PVC and Job get new names.
func (r *PopulatorReconciler) restart(ctx context.Context, pvc *corev1.PersistentVolumeClaim, why, token string) (ctrl.Result, error) {
	if err := r.cleanup(ctx, pvc); err != nil {
		return ctrl.Result{}, err
	}
	next := attemptOf(pvc) + 1
	set := map[string]string{
		v1alpha1.AnnPopAttempt: strconv.Itoa(next), v1alpha1.AnnPrimeUID: "", v1alpha1.AnnPopulateJobUID: "", v1alpha1.AnnVolume: "",
		v1alpha1.AnnPopFailedAt: "", v1alpha1.AnnPopRetryAt: "", v1alpha1.AnnProgress: "", v1alpha1.AnnPhase: v1alpha1.PopPending,
	}
	var msg string
	switch why {
	case restartRetry:
		n := retriesOf(pvc) + 1
		set[v1alpha1.AnnPopRetries] = strconv.Itoa(int(n))
		msg = fmt.Sprintf("retry %d of %d after: %s", n, r.Imager.Retry.Limit, pvc.Annotations[v1alpha1.AnnMessage])
	case restartUser:
		set[v1alpha1.AnnPopRetries] = ""
		set[v1alpha1.AnnPopRetried] = token
		msg = fmt.Sprintf("fresh attempt asked for by %s=%s", v1alpha1.AnnotationRetry, token)
	default:
		msg = "starting over: " + why
	}
	set[v1alpha1.AnnMessage] = msg
	if err := r.patchAnnotations(ctx, pvc, set); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("start attempt %d: %w", next, err)
	}
	reason := v1alpha1.EventPopulatorRetrying
	if why == restartPrimeLost || why == restartJobGone {
		reason = v1alpha1.EventPopulatorRestarted
	}
	r.event(pvc, corev1.EventTypeNormal, reason, "attempt %d: %s", next, msg)
	return ctrl.Result{RequeueAfter: conflictRetry}, nil // the patch brings us back; this is a backstop
}

// attemptFailed records the current attempt's failed Job once: phase,
// message, when it failed, and when (if ever) the controller retries.
// Transient failures are retried with the manager's RetryPolicy;
// permanent ones (bad input, refused arguments, a limit eviction) are
// not: only the user can fix what fails them.
func (r *PopulatorReconciler) attemptFailed(ctx context.Context, pvc *corev1.PersistentVolumeClaim, job *batchv1.Job) (ctrl.Result, error) {
	res, pod, err := jobResult(ctx, r.Client, job)
	if err != nil {
		return ctrl.Result{}, err
	}
	reason, msg := failureOf(job, res, pod, true)
	msg = reason + ": " + deviceHint(pvc, reason, msg)
	// As for images: a pod evicted for outgrowing its own limits meets
	// them again on a fresh Job.
	permanent := permanentFailure(res) || limitEviction(pod)
	policy, n := r.Imager.Retry, retriesOf(pvc)
	now := time.Now().UTC().Truncate(time.Second)
	set := map[string]string{v1alpha1.AnnPhase: v1alpha1.PopFailed, v1alpha1.AnnProgress: "", v1alpha1.AnnPopFailedAt: now.Format(time.RFC3339)}
	var result ctrl.Result
	switch ask := fmt.Sprintf("set annotation %s to a new value to try again", v1alpha1.AnnotationRetry); {
	case permanent:
		msg += "; not retried (permanent): fix the cause, then " + ask
	case n >= policy.Limit:
		msg += fmt.Sprintf("; not retried: %d retries made; %s", n, ask)
	default:
		// Rounded up to the second the annotation keeps: never sooner
		// than the policy's delay.
		at := time.Now().Add(policy.Delay(n + 1)).Add(time.Second - 1).Truncate(time.Second).UTC()
		set[v1alpha1.AnnPopRetryAt] = at.Format(time.RFC3339)
		msg += fmt.Sprintf("; retry %d of %d at %s", n+1, policy.Limit, at.Format(time.RFC3339))
		result.RequeueAfter = time.Until(at)
	}
	set[v1alpha1.AnnMessage] = msg
	if err := r.patchAnnotations(ctx, pvc, set); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("record the failed attempt: %w", err)
	}
	// After the record: a conflict above retries without a second event.
	r.event(pvc, corev1.EventTypeWarning, v1alpha1.EventPopulatorFailed, "%s", msg)
	return result, nil
}

// afterFailure handles a PVC whose current attempt failed: the user's
// retry annotation or a due controller retry starts the next attempt;
// otherwise it waits (done is false when the attempt has not failed: a
// retry annotation set then is only acknowledged).
func (r *PopulatorReconciler) afterFailure(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (res ctrl.Result, done bool, err error) {
	a := pvc.Annotations
	token := a[v1alpha1.AnnotationRetry]
	asked := token != "" && token != a[v1alpha1.AnnPopRetried]
	switch {
	case a[v1alpha1.AnnPopFailedAt] == "" && asked:
		// Acknowledged whatever the state, as for images (retryRequested):
		// a token left pending would fire at a later, unrelated failure
		// and skip its backoff. Only a failed population gets a fresh
		// attempt.
		if err := r.patchAnnotations(ctx, pvc, map[string]string{v1alpha1.AnnPopRetried: token}); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, true, nil
			}
			return ctrl.Result{}, true, fmt.Errorf("acknowledge %s=%s: %w", v1alpha1.AnnotationRetry, token, err)
		}
		return ctrl.Result{}, false, nil
	case a[v1alpha1.AnnPopFailedAt] == "":
		return ctrl.Result{}, false, nil
	case asked:
		res, err := r.restart(ctx, pvc, restartUser, token)
		return res, true, err
	}
	if at := a[v1alpha1.AnnPopRetryAt]; at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if wait := time.Until(t); err == nil && wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, true, nil
		}
		res, err := r.restart(ctx, pvc, restartRetry, "")
		return res, true, err
	}
	return ctrl.Result{}, true, nil // failed for good: the retry annotation's watch brings us back
}

// patchAnnotations sets (or, for "", removes) annotations on the user's
// PVC, with the resourceVersion as a precondition: these record the
// population's state, so a write from a stale read fails (Conflict).
func (r *PopulatorReconciler) patchAnnotations(ctx context.Context, pvc *corev1.PersistentVolumeClaim, set map[string]string) error {
	patch := client.MergeFromWithOptions(pvc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	for k, v := range set {
		if v == "" {
			delete(pvc.Annotations, k)
		} else {
			pvc.Annotations[k] = v
		}
	}
	return r.Patch(ctx, pvc, patch)
}

// indexClaimUID indexes PVs by the UID their claimRef names: the volume
// of a prime PVC already gone is found by the UID recorded for it.
const indexClaimUID = "spec.claimRef.uid"

func claimUIDOf(o client.Object) []string {
	if ref := o.(*corev1.PersistentVolume).Spec.ClaimRef; ref != nil && ref.UID != "" {
		return []string{string(ref.UID)}
	}
	return nil
}

// reclaimLostPrimeVolume is reclaimPrimeVolume for a prime PVC that is
// already gone (deleted with its namespace, or by someone else, before
// the populator saw it): its PV, Released, still names it by the UID
// recorded on the user's PVC, and is set to be deleted too. The prime's
// creation time is gone with it: the user's PVC's (the prime is always
// younger) bounds the PV's instead.
func (r *PopulatorReconciler) reclaimLostPrimeVolume(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	uid := pvc.Annotations[v1alpha1.AnnPrimeUID]
	if uid == "" {
		return nil
	}
	list := &corev1.PersistentVolumeList{}
	if err := r.List(ctx, list, client.MatchingFields{indexClaimUID: uid}); err != nil {
		return fmt.Errorf("list the volumes of prime PVC %s: %w", uid, err)
	}
	gone := &corev1.PersistentVolumeClaim{}
	gone.Namespace, gone.Name, gone.UID = pvc.Namespace, primeName(pvc, "prime"), types.UID(uid)
	for i := range list.Items {
		pv := &list.Items[i]
		// As verifyPrimeVolume, for a claim that no longer exists: its
		// claimRef names the prime by namespace, name and UID, and it is
		// of the user's class.
		ref := pv.Spec.ClaimRef
		if ref.Namespace != gone.Namespace || ref.Name != gone.Name || pvc.Spec.StorageClassName == nil || pv.Spec.StorageClassName != *pvc.Spec.StorageClassName {
			continue
		}
		if ok, err := r.provisionedFor(ctx, pv, gone.UID, pvc.CreationTimestamp); err != nil || !ok {
			return err
		}
		if err := r.setReclaimDelete(ctx, pv, gone.Name); err != nil {
			return err
		}
	}
	return nil
}

// reclaimPrimeVolume makes the prime PVC's volume go with it: on a
// Retain class, a prime PVC deleted after a failed or abandoned attempt
// would leave its PV Released forever. Only a PV proven the prime's own
// (verifyPrimeVolume: the prime Bound to it, its claimRef naming the
// prime by UID) and provisioned for it (provisionedFor) is patched, with
// its resourceVersion as a precondition; a PV already handed to the
// user's PVC names that PVC and is never touched.
func (r *PopulatorReconciler) reclaimPrimeVolume(ctx context.Context, pvc, prime *corev1.PersistentVolumeClaim) error {
	if prime.Spec.VolumeName == "" || prime.Status.Phase != corev1.ClaimBound {
		return nil
	}
	pv := &corev1.PersistentVolume{}
	if err := r.Get(ctx, types.NamespacedName{Name: prime.Spec.VolumeName}, pv); err != nil {
		return client.IgnoreNotFound(err)
	}
	if verifyPrimeVolume(pvc, prime, pv) != "" {
		return nil
	}
	if ok, err := r.provisionedFor(ctx, pv, prime.UID, prime.CreationTimestamp); err != nil || !ok {
		return err
	}
	return r.setReclaimDelete(ctx, pv, prime.Name)
}

// provisionedFor reports whether pv was made by its class's provisioner
// for the claim uid, created at notBefore or later. Which PVC is the
// prime rests on the UID recorded on the user's PVC, which its tenant can
// rewrite: a PVC of the tenant's naming a volume it could bind (a static
// or recycled Retain PV) would pass verifyPrimeVolume, and setting that
// PV to Delete would destroy storage the tenant never had the right to.
// A PV the provisioner made for the prime after it was created, with the
// class's own reclaim policy, is nobody else's. The class is read for its
// policy: one gone leaves the PV as it is.
func (r *PopulatorReconciler) provisionedFor(ctx context.Context, pv *corev1.PersistentVolume, uid types.UID, notBefore metav1.Time) (bool, error) {
	ref := pv.Spec.ClaimRef
	if pv.Annotations[annProvisionedBy] == "" || ref == nil || ref.UID != uid || pv.CreationTimestamp.Before(&notBefore) || pv.Spec.StorageClassName == "" {
		return false, nil
	}
	sc := &storagev1.StorageClass{}
	if err := r.Get(ctx, types.NamespacedName{Name: pv.Spec.StorageClassName}, sc); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	policy := corev1.PersistentVolumeReclaimDelete // the API's default
	if sc.ReclaimPolicy != nil {
		policy = *sc.ReclaimPolicy
	}
	return pv.Annotations[annProvisionedBy] == sc.Provisioner && pv.Spec.PersistentVolumeReclaimPolicy == policy, nil
}

// setReclaimDelete sets a verified prime PV's reclaim policy to Delete,
// with its resourceVersion as a precondition: if the PV changed since it
// was verified, the write fails and the next reconcile verifies again.
func (r *PopulatorReconciler) setReclaimDelete(ctx context.Context, pv *corev1.PersistentVolume, prime string) error {
	if pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
		return nil
	}
	patch := client.MergeFromWithOptions(pv.DeepCopy(), client.MergeFromWithOptimisticLock{})
	pv.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimDelete
	if err := r.Patch(ctx, pv, patch); err != nil {
		return fmt.Errorf("set PV %s to be deleted with prime PVC %s: %w", pv.Name, prime, err)
	}
	ctrl.LoggerFrom(ctx).Info("the prime PVC's volume goes with it", "pv", pv.Name, "prime", prime)
	return nil
}

// populatedImage maps a PVC populated from an image to that image while
// the image waits to be deleted: the end of a population (or of its PVC)
// may release the image's finalizer (see populationsOf). It needs the
// populator's indexDataSource index, which the populator's
// SetupWithManager registers: both reconcilers always run together.
func (r *VMDKImageReconciler) populatedImage(ctx context.Context, o client.Object) []ctrl.Request {
	name, ok := dataSourceImage(o.(*corev1.PersistentVolumeClaim))
	if !ok {
		return nil
	}
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: name}
	img := &v1alpha1.VMDKImage{}
	if err := r.Get(ctx, key, img); err != nil || img.DeletionTimestamp.IsZero() {
		return nil // only a deletion waits on populations
	}
	return []ctrl.Request{{NamespacedName: key}}
}
