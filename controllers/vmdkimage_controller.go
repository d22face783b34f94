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
		VirtualSize: st.VirtualSize, AllocatedBytes: st.AllocatedBytes, VSphere: vsphereResult(st.VSphere)}
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
