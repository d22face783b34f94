// Package controllers reconciles VMDKImages into PVCs and imager Jobs.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Field indexes on VMDKImages.
const (
	indexBacking = "spec.backingImage.name"
	indexSource  = "spec.source.image.name"
)

// maxChainDepth bounds the walk up a backing chain (vmdk's own limit).
const maxChainDepth = 16

// conflictRetry is how soon a reconcile whose status update lost a race
// with another writer starts again (from a fresh read).
const conflictRetry = 200 * time.Millisecond

// nextStep is how soon a reconcile that changed status to move to its
// next step runs again (once the status update has landed).
const nextStep = 100 * time.Millisecond

// progressInterval is how often a running Job's progress is refreshed.
const progressInterval = 5 * time.Second

// VMDKImageReconciler turns each VMDKImage into its PVC and the imager
// Job that writes it, and records what the Job reported.
type VMDKImageReconciler struct {
	client.Client
	// APIReader reads past the cache: the live image and child before a
	// child is refused as foreign.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Logs      PodLogReader
	Imager    ImagerConfig

	blocked blockerEvents // the blockers told of in events
}

// +kubebuilder:rbac:groups=storage.vmdkpop.io,resources=vmdkimages,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=storage.vmdkpop.io,resources=vmdkimages/status,verbs=update
// +kubebuilder:rbac:groups=storage.vmdkpop.io,resources=vmdkimages/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one image one step: PVC, then dependencies, then Job,
// then status from the Job's result.
func (r *VMDKImageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	img := &v1alpha1.VMDKImage{}
	if err := r.Get(ctx, req.NamespacedName, img); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !img.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, img)
	}
	if controllerutil.AddFinalizer(img, v1alpha1.Finalizer) {
		if err := r.Update(ctx, img); err != nil {
			return ctrl.Result{}, err
		}
	}
	old := img.Status.DeepCopy()
	res, err := r.reconcile(ctx, img)
	if err == nil {
		img.Status.ObservedGeneration = img.Generation
	}
	if !equality.Semantic.DeepEqual(old, &img.Status) {
		if uerr := r.Status().Update(ctx, img); uerr != nil {
			if apierrors.IsConflict(uerr) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, uerr
		}
	}
	return res, err
}

func (r *VMDKImageReconciler) reconcile(ctx context.Context, img *v1alpha1.VMDKImage) (ctrl.Result, error) {
	st := &img.Status
	if r.retryRequested(img) {
		return ctrl.Result{RequeueAfter: nextStep}, nil
	}
	if st.Phase == v1alpha1.PhaseReady || st.Phase == v1alpha1.PhaseFailed {
		return r.finished(ctx, img)
	}

	// The images this one reads must be Ready first.
	mounts, wait, err := r.dependencies(ctx, img)
	if err != nil {
		return ctrl.Result{}, err
	}
	if wait != nil {
		r.setWaiting(img, wait)
		return ctrl.Result{}, nil // a watch on the dependency brings us back
	}

	var sourceSize int64
	if img.Spec.Source != nil && img.Spec.Source.Image != nil {
		sourceSize = mounts[0].Status.VirtualSize
	}
	claim, wait, err := r.ensurePVC(ctx, img, sourceSize)
	switch {
	case err != nil:
		return r.refuse(img, err)
	case wait != nil:
		r.setWaiting(img, wait)
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	st.ClaimName = claim.Name

	if st.Phase == "" {
		// Status lost (or never written): the attempt under way is the
		// one whose Job the image recorded.
		if err := r.restoreAttempt(ctx, img); err != nil {
			return ctrl.Result{}, err
		}
	}
	desired := jobFor(img, claim.Name, mounts, r.Imager)
	existing := &batchv1.Job{}
	switch err := getChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnJobUID, desired.Name, existing); {
	case err == nil:
		// The attempt's own Job: its outcome, not any record, decides.
		st.JobName = existing.Name
		return r.observeJob(ctx, img, claim, existing)
	case isForeign(err):
		return r.refuse(img, err)
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, err
	}
	// No Job for this attempt. One that ended is recorded on the PVC
	// (its Job since gone: TTL, deleted); with status lost, the latest
	// record is the image's outcome.
	if rec := recordOf(claim, img); rec != nil && ((rec.Attempt == st.Attempt && rec.Job == desired.Name) || st.Phase == "") {
		r.applyRecord(img, rec)
		return r.finished(ctx, img)
	}
	if made, err := r.jobMadeAndGone(ctx, img, desired.Name); err != nil {
		return ctrl.Result{}, err
	} else if made {
		// This attempt's Job was made, and went: never make it again.
		st.JobName = desired.Name
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionProgressing); c != nil && c.Reason == v1alpha1.ReasonRetryScheduled {
			// It had failed, and its retry waited on it: retry now.
			return r.scheduleRetry(img, time.Time{}, desired.Name, v1alpha1.ReasonJobLost, "Job "+desired.Name+" was deleted while its retry waited ("+st.LastError+")"), nil
		}
		return r.jobLost(ctx, img, claim, desired.Name)
	}
	job, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnJobUID, desired)
	switch {
	case err != nil:
		return r.refuse(img, err)
	case created:
		st.JobName = job.Name
		op := operationOf(img)
		st.Phase = phaseOf(op)
		st.Progress = ""
		started := "Job " + desired.Name + " started"
		if st.Retries > 0 {
			started += fmt.Sprintf(" (retry %d of %d)", st.Retries, r.Imager.Retry.Limit)
		}
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonJobStarting, started)
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonJobStarting, string(op)+" in progress")
		r.event(img, corev1.EventTypeNormal, map[Operation]string{OpCreate: v1alpha1.EventCreateStarted, OpImport: v1alpha1.EventImportStarted, OpFlatten: v1alpha1.EventFlattenStarted}[op],
			"Job %s %ss the image into PVC %s", desired.Name, op, claim.Name)
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	st.JobName = job.Name
	return r.observeJob(ctx, img, claim, job)
}

// finished keeps a Ready or Failed image true to its PVC: Ready only
// while the PVC holds it, grown when storage.size grows, re-read when
// asked, its chain checked. Nothing here runs the image's Job again.
func (r *VMDKImageReconciler) finished(ctx context.Context, img *v1alpha1.VMDKImage) (ctrl.Result, error) {
	st := &img.Status
	pvc := &corev1.PersistentVolumeClaim{}
	err := getChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnClaimUID, nameFor(img, "disk"), pvc)
	if isForeign(err) {
		r.refuseForeign(img, err)
		return ctrl.Result{}, nil
	}
	if img.Annotations[v1alpha1.AnnClaimUID] == "" && apierrors.IsNotFound(err) {
		// Failed before it had a PVC (a dependency that cannot be met).
		return ctrl.Result{}, nil
	}
	if msg := claimLost(pvc, err); msg != "" {
		if st.Phase == v1alpha1.PhaseReady || meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStorage) == nil ||
			meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStorage).Reason != v1alpha1.ReasonClaimLost {
			r.markClaimLost(img, msg)
		}
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	recheck := ctrl.Result{}
	if err := r.storageState(ctx, img, pvc); errors.Is(err, errQuotaRecheck) {
		recheck.RequeueAfter = quotaRecheck
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if st.Phase != v1alpha1.PhaseReady {
		return recheck, nil
	}
	if err := r.keepRecord(ctx, img, pvc); err != nil {
		return ctrl.Result{}, err
	}
	if token := img.Annotations[v1alpha1.AnnotationRefresh]; token != "" && token != st.Refreshed {
		return r.refresh(ctx, img, token)
	}
	return recheck, r.checkChain(ctx, img)
}

// keepRecord makes the PVC's record say what a Ready image's status says
// (images made before records existed, and refreshed ones).
func (r *VMDKImageReconciler) keepRecord(ctx context.Context, img *v1alpha1.VMDKImage, pvc *corev1.PersistentVolumeClaim) error {
	st := &img.Status
	if st.JobName == "" {
		return nil
	}
	res := jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, CID: st.CID, ParentCID: st.ParentCID, CreateType: st.CreateType,
		VirtualSize: st.VirtualSize, AllocatedBytes: st.AllocatedBytes}
	if rec := recordOf(pvc, img); rec != nil && rec.Job == st.JobName && rec.Result.Phase == jobapi.Succeeded {
		res.TargetFormat, res.SourceFormat, res.Target, res.SHA256, res.Spooled = rec.Result.TargetFormat, rec.Result.SourceFormat, rec.Result.Target, rec.Result.SHA256, rec.Result.Spooled
	}
	return writeRecord(ctx, r.Client, pvc, recordFor(img, &res))
}

// refuse records a refusal of a foreign object in the image's conditions
// (it stays Pending: removing the squatter lets it go on), or returns any
// other error for a retry.
func (r *VMDKImageReconciler) refuse(img *v1alpha1.VMDKImage, err error) (ctrl.Result, error) {
	if b := quotaBlocker(err); b != nil {
		img.Status.Phase = v1alpha1.PhasePending
		r.setBlocked(img, b, metav1.ConditionFalse)
		return ctrl.Result{RequeueAfter: quotaRecheck}, nil
	}
	if !isForeign(err) {
		return ctrl.Result{}, err
	}
	img.Status.Phase = v1alpha1.PhasePending
	r.refuseForeign(img, err)
	return ctrl.Result{RequeueAfter: foreignRecheck}, nil
}

// refuseForeign sets the conditions and event of a refused foreign object.
func (r *VMDKImageReconciler) refuseForeign(img *v1alpha1.VMDKImage, err error) {
	msg := err.Error()
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonForeignObject || c.Message != msg {
		r.event(img, corev1.EventTypeWarning, v1alpha1.ReasonForeignObject, "%s", msg)
	}
	if img.Status.Phase != v1alpha1.PhaseReady {
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonForeignObject, msg)
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonForeignObject, msg)
	}
}

// observeJob records a Job's progress, or its outcome once it has
// ended: the outcome on the PVC first (the fact), then in status.
func (r *VMDKImageReconciler) observeJob(ctx context.Context, img *v1alpha1.VMDKImage, claim *corev1.PersistentVolumeClaim, job *batchv1.Job) (ctrl.Result, error) {
	st := &img.Status
	op := operationOf(img)
	finished, failed := jobFinished(job)
	if !finished {
		st.Phase = phaseOf(op)
		if p, ok := jobProgress(ctx, r.Client, r.Logs, job); ok {
			st.Progress = p
		}
		msg := fmt.Sprintf("Job %s is running", job.Name)
		if job.Status.Failed > 0 {
			msg += fmt.Sprintf(" (%d failed attempts so far, retrying)", job.Status.Failed)
		}
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonJobRunning, msg)
		r.showJobBlocker(ctx, img, claim, job)
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	res, pod, err := jobResult(ctx, r.Client, job)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !failed && (res == nil || res.Phase != jobapi.Succeeded) {
		// The Job succeeded: its pod exited 0. Without the pod's word
		// for what it made, the files are asked.
		var wait ctrl.Result
		if res, wait, err = r.resultLost(ctx, img, job.Name); err != nil || res == nil {
			return wait, err
		}
	}
	if res != nil && res.Phase == jobapi.Succeeded {
		return r.succeeded(ctx, img, claim, res)
	}
	reason, msg := failureOf(job, res, pod, failed)
	if res == nil || res.Phase != jobapi.Failed {
		res = &jobapi.Result{Phase: jobapi.Failed, Reason: reason, Message: msg, Permanent: limitEviction(pod)}
	}
	if !r.finalFailure(img, res) {
		return r.scheduleRetry(img, jobFailedAt(job), job.Name, reason, msg), nil
	}
	return r.failedForGood(ctx, img, claim, res, reason, msg)
}

// jobLost ends an attempt whose Job went before its end was seen (deleted,
// or its TTL ran out while the manager was down). Images are committed by
// one rename of the descriptor, so if the image is in its PVC, the Job
// finished it: that is read back. If not, the attempt failed, and the
// next one starts at once (its Job is gone: no failure time to wait from).
func (r *VMDKImageReconciler) jobLost(ctx context.Context, img *v1alpha1.VMDKImage, claim *corev1.PersistentVolumeClaim, name string) (ctrl.Result, error) {
	res, wait, err := r.resultLost(ctx, img, name)
	if err != nil || res == nil {
		return wait, err
	}
	if res.Phase == jobapi.Succeeded {
		return r.succeeded(ctx, img, claim, res)
	}
	reason := v1alpha1.ReasonJobLost
	msg := fmt.Sprintf("Job %s was deleted before its end was seen, and the image is not in its PVC (%s: %s)", name, res.Reason, res.Message)
	failed := &jobapi.Result{Phase: jobapi.Failed, Reason: reason, Message: msg}
	if !r.finalFailure(img, failed) {
		return r.scheduleRetry(img, time.Time{}, name, reason, msg), nil
	}
	return r.failedForGood(ctx, img, claim, failed, reason, msg)
}

// succeeded ends the attempt with res: recorded on the PVC (the fact),
// then in status.
func (r *VMDKImageReconciler) succeeded(ctx context.Context, img *v1alpha1.VMDKImage, claim *corev1.PersistentVolumeClaim, res *jobapi.Result) (ctrl.Result, error) {
	if err := writeRecord(ctx, r.Client, claim, recordFor(img, res)); err != nil {
		return ctrl.Result{}, err
	}
	r.setReady(img, res)
	r.event(img, corev1.EventTypeNormal, v1alpha1.EventReady, "image ready: %s, CID %s, %d bytes allocated", res.CreateType, res.CID, res.AllocatedBytes)
	return ctrl.Result{}, r.checkChain(ctx, img)
}

// failedForGood ends the image's work with a failure: recorded, then
// status, then the event.
func (r *VMDKImageReconciler) failedForGood(ctx context.Context, img *v1alpha1.VMDKImage, claim *corev1.PersistentVolumeClaim, res *jobapi.Result, reason, msg string) (ctrl.Result, error) {
	msg = r.finalMessage(res, msg)
	if err := writeRecord(ctx, r.Client, claim, recordFor(img, &jobapi.Result{Phase: jobapi.Failed, Reason: reason, Message: msg, Permanent: res.Permanent})); err != nil {
		return ctrl.Result{}, err
	}
	r.setFailed(img, reason, msg)
	r.event(img, corev1.EventTypeWarning, v1alpha1.EventFailed, "%s: %s", reason, msg)
	return ctrl.Result{}, nil
}

// dependencies returns the images a Job for img mounts (the backing chain,
// or the chain being flattened, nearest first), or why img must wait.
func (r *VMDKImageReconciler) dependencies(ctx context.Context, img *v1alpha1.VMDKImage) ([]*v1alpha1.VMDKImage, *waitReason, error) {
	var first string
	var why string
	switch {
	case img.Spec.BackingImage != nil:
		first, why = img.Spec.BackingImage.Name, v1alpha1.ReasonWaitingForBacking
	case img.Spec.Source != nil && img.Spec.Source.Image != nil:
		first, why = img.Spec.Source.Image.Name, v1alpha1.ReasonWaitingForSource
	default:
		return nil, nil, nil
	}
	return readyChain(ctx, r.Client, img.Namespace, img.Name, first, why)
}

// readyChain walks a backing chain from the image named first: every
// image in it must be Ready, or the caller waits (why is the reason).
// self is the image asking, which may not appear in the chain. The walk
// goes on past an image that is not Ready yet, so a loop is found (and
// fails the image) while its images still wait for one another.
func readyChain(ctx context.Context, c client.Reader, ns, self, first, why string) ([]*v1alpha1.VMDKImage, *waitReason, error) {
	var chain []*v1alpha1.VMDKImage
	var wait *waitReason
	seen := map[string]bool{self: true}
	for name := first; name != ""; {
		if seen[name] {
			return nil, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("image %s is in a backing loop", name), true}, nil
		}
		if len(chain) >= maxChainDepth {
			return nil, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("backing chain deeper than %d images", maxChainDepth), true}, nil
		}
		seen[name] = true
		dep := &v1alpha1.VMDKImage{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, dep); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, firstWait(wait, &waitReason{why, fmt.Sprintf("image %s does not exist yet", name), false}), nil
			}
			return nil, nil, err
		}
		switch {
		case dep.Status.Phase == v1alpha1.PhaseFailed:
			wait = firstWait(wait, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("image %s failed", name), false})
		case !dep.DeletionTimestamp.IsZero():
			wait = firstWait(wait, &waitReason{why, fmt.Sprintf("image %s is being deleted", name), false})
		case dep.Status.Phase != v1alpha1.PhaseReady:
			wait = firstWait(wait, &waitReason{why, fmt.Sprintf("waiting for image %s to be Ready (it is %s)", name, orPending(dep.Status.Phase)), false})
		}
		chain = append(chain, dep)
		name = ""
		if dep.Spec.BackingImage != nil {
			name = dep.Spec.BackingImage.Name
		}
	}
	if wait != nil {
		return nil, wait, nil
	}
	return chain, nil, nil
}

// firstWait keeps the wait nearest the asking image.
func firstWait(have, next *waitReason) *waitReason {
	if have != nil {
		return have
	}
	return next
}

type waitReason struct {
	reason, message string
	fatal           bool // waiting cannot help: the image fails
}

func orPending(p v1alpha1.Phase) v1alpha1.Phase {
	if p == "" {
		return v1alpha1.PhasePending
	}
	return p
}

func (r *VMDKImageReconciler) setWaiting(img *v1alpha1.VMDKImage, w *waitReason) {
	if w.fatal {
		img.Status.Phase = v1alpha1.PhaseFailed
		img.Status.LastError = w.reason + ": " + w.message
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, w.reason, w.message)
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, w.reason, w.message)
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventFailed, "%s", w.message)
		return
	}
	img.Status.Phase = v1alpha1.PhasePending
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != w.reason || c.Message != w.message {
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventWaiting, "%s", w.message)
	}
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, w.reason, w.message)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, w.reason, w.message)
}

// checkChain sets ChainValid on a child: its parentCID must still be its
// parent's CID.
func (r *VMDKImageReconciler) checkChain(ctx context.Context, img *v1alpha1.VMDKImage) error {
	if img.Spec.BackingImage == nil {
		return nil
	}
	parent := &v1alpha1.VMDKImage{}
	err := r.Get(ctx, types.NamespacedName{Namespace: img.Namespace, Name: img.Spec.BackingImage.Name}, parent)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	switch {
	case apierrors.IsNotFound(err):
		r.chainCondition(img, metav1.ConditionFalse, v1alpha1.ReasonParentChanged, fmt.Sprintf("backing image %s is gone", img.Spec.BackingImage.Name))
	case parent.Status.CID != img.Status.ParentCID:
		r.chainCondition(img, metav1.ConditionFalse, v1alpha1.ReasonParentChanged,
			fmt.Sprintf("parentCID %s does not match backing image %s's CID %s", img.Status.ParentCID, parent.Name, parent.Status.CID))
	default:
		r.chainCondition(img, metav1.ConditionTrue, v1alpha1.ReasonParentCIDMatches, fmt.Sprintf("parentCID matches %s's CID %s", parent.Name, parent.Status.CID))
	}
	return nil
}

func (r *VMDKImageReconciler) chainCondition(img *v1alpha1.VMDKImage, status metav1.ConditionStatus, reason, msg string) {
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionChainValid); status == metav1.ConditionFalse && (c == nil || c.Status != status) {
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventChainBroken, "%s", msg)
	}
	r.setCondition(img, v1alpha1.ConditionChainValid, status, reason, msg)
}

// finalize lets a deleted image go once no other image needs it.
func (r *VMDKImageReconciler) finalize(ctx context.Context, img *v1alpha1.VMDKImage) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(img, v1alpha1.Finalizer) {
		return ctrl.Result{}, nil
	}
	users, err := r.users(ctx, img)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(users) > 0 {
		msg := fmt.Sprintf("deletion waits: %v still need this image", users)
		if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionDeletionBlocked); c == nil || c.Message != msg {
			r.event(img, corev1.EventTypeWarning, v1alpha1.EventDeleteBlocked, "%s", msg)
			r.setCondition(img, v1alpha1.ConditionDeletionBlocked, metav1.ConditionTrue, v1alpha1.ReasonChildrenExist, msg)
			if err := r.Status().Update(ctx, img); err != nil && !apierrors.IsConflict(err) {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, nil // a watch on the users brings us back
	}
	controllerutil.RemoveFinalizer(img, v1alpha1.Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, img))
}

// users lists the images that need img: its children (always), and the
// images flattening it (until they are done). An image never needs
// itself, and a user being deleted that holds nothing of img needs it no
// more: so a backing loop (a backs b backs a), whose images all failed,
// and a namespace deleted at once, never deadlock on each other's
// finalizers.
func (r *VMDKImageReconciler) users(ctx context.Context, img *v1alpha1.VMDKImage) ([]string, error) {
	var out []string
	for _, idx := range []string{indexBacking, indexSource} {
		list := &v1alpha1.VMDKImageList{}
		if err := r.List(ctx, list, client.InNamespace(img.Namespace), client.MatchingFields{idx: img.Name}); err != nil {
			return nil, err
		}
		for _, u := range list.Items {
			done := u.Status.Phase == v1alpha1.PhaseReady || u.Status.Phase == v1alpha1.PhaseFailed
			switch {
			case u.UID == img.UID:
				continue
			case idx == indexSource && done:
				continue
			case !u.DeletionTimestamp.IsZero() && holdsNothing(u.Status.Phase):
				continue
			}
			out = append(out, u.Name)
		}
	}
	// And the PVCs populating from it. The images below it in its chain
	// need no check of their own: img is their child, and a Ready child
	// holds its parent until it is gone itself, even while being deleted
	// (holdsNothing), so a population holds the whole chain.
	live := r.APIReader
	if live == nil {
		live = r.Client
	}
	pops, err := populationsOf(ctx, live, img.Namespace, img.Name)
	return append(out, pops...), err
}

// holdsNothing reports whether an image in phase p has no content of
// img's in it nor a Job reading img: it never got that far (waiting, or
// failed). A Ready child being deleted still holds its parent until it
// is gone, as a chain deleted at once goes top down.
func holdsNothing(p v1alpha1.Phase) bool {
	return p == "" || p == v1alpha1.PhasePending || p == v1alpha1.PhaseFailed
}

func (r *VMDKImageReconciler) setCondition(img *v1alpha1.VMDKImage, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&img.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: img.Generation,
	})
}

func (r *VMDKImageReconciler) event(img *v1alpha1.VMDKImage, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(img, nil, typ, reason, "Reconcile", format, args...)
	}
}

// SetupWithManager registers the controller: it owns Jobs and PVCs, and a
// change to an image wakes the images that depend on it and the images it
// depends on. It reads the populator's indexDataSource index (a deleted
// image waits for its populations): PopulatorReconciler.SetupWithManager
// must run on the same manager.
func (r *VMDKImageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.VMDKImage{}, indexBacking, func(o client.Object) []string {
		if b := o.(*v1alpha1.VMDKImage).Spec.BackingImage; b != nil {
			return []string{b.Name}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1alpha1.VMDKImage{}, indexSource, func(o client.Object) []string {
		if s := o.(*v1alpha1.VMDKImage).Spec.Source; s != nil && s.Image != nil {
			return []string{s.Image.Name}
		}
		return nil
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.VMDKImage{}).
		Owns(&batchv1.Job{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Watches(&v1alpha1.VMDKImage{}, handler.EnqueueRequestsFromMapFunc(r.related)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(r.populatedImage)).
		Complete(r)
}

// related maps an image to the images whose reconcile depends on it.
func (r *VMDKImageReconciler) related(ctx context.Context, o client.Object) []ctrl.Request {
	img := o.(*v1alpha1.VMDKImage)
	var reqs []ctrl.Request
	add := func(name string) {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: img.Namespace, Name: name}})
	}
	if img.Spec.BackingImage != nil {
		add(img.Spec.BackingImage.Name)
	}
	if img.Spec.Source != nil && img.Spec.Source.Image != nil {
		add(img.Spec.Source.Image.Name)
	}
	for _, idx := range []string{indexBacking, indexSource} {
		list := &v1alpha1.VMDKImageList{}
		if err := r.List(ctx, list, client.InNamespace(img.Namespace), client.MatchingFields{idx: img.Name}); err != nil {
			// A map function cannot return an error: the images it would
			// have woken are reconciled at their next event instead.
			ctrl.LoggerFrom(ctx).Error(err, "listing the images that depend on an image", "image", img.Name, "index", idx)
			continue
		}
		for _, u := range list.Items {
			add(u.Name)
		}
	}
	return reqs
}
