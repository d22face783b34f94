// Package controllers reconciles VMDKImages into PVCs and imager Jobs.
package controllers

import (
	"context"
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
	done := (st.Phase == v1alpha1.PhaseReady || st.Phase == v1alpha1.PhaseFailed) && st.ObservedGeneration == img.Generation
	if done {
		if st.Phase != v1alpha1.PhaseReady {
			return ctrl.Result{}, nil
		}
		pvc := &corev1.PersistentVolumeClaim{}
		switch err := getChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnClaimUID, st.ClaimName, pvc); {
		case err == nil:
			if err := r.growPVC(ctx, img, pvc); err != nil {
				return ctrl.Result{}, err
			}
		case isForeign(err):
			r.refuseForeign(img, err)
		}
		if token := img.Annotations[v1alpha1.AnnotationRefresh]; token != "" && token != st.Refreshed {
			return r.refresh(ctx, img, token)
		}
		return ctrl.Result{}, r.checkChain(ctx, img)
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
	claim, err := r.ensurePVC(ctx, img, sourceSize)
	if err != nil {
		return r.refuse(img, err)
	}
	st.ClaimName = claim.Name

	desired := jobFor(img, claim.Name, mounts, r.Imager)
	st.JobName = desired.Name
	job, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnJobUID, desired)
	switch {
	case err != nil:
		return r.refuse(img, err)
	case created:
		op := operationOf(img)
		st.Phase = phaseOf(op)
		st.Progress = ""
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonJobStarting, "Job "+desired.Name+" started")
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonJobStarting, string(op)+" in progress")
		r.event(img, corev1.EventTypeNormal, map[Operation]string{OpCreate: v1alpha1.EventCreateStarted, OpImport: v1alpha1.EventImportStarted, OpFlatten: v1alpha1.EventFlattenStarted}[op],
			"Job %s %ss the image into PVC %s", desired.Name, op, claim.Name)
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	return r.observeJob(ctx, img, job)
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

// observeJob records a Job's progress, or its result once it has ended.
func (r *VMDKImageReconciler) observeJob(ctx context.Context, img *v1alpha1.VMDKImage, job *batchv1.Job) (ctrl.Result, error) {
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
		r.showJobBlocker(ctx, img, job)
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	res, pod, err := jobResult(ctx, r.Client, job)
	if err != nil {
		return ctrl.Result{}, err
	}
	st.ObservedGeneration = img.Generation
	if !failed && res != nil && res.Phase == jobapi.Succeeded {
		st.Phase = v1alpha1.PhaseReady
		st.Progress = "100%"
		st.CID, st.ParentCID, st.CreateType = res.CID, res.ParentCID, res.CreateType
		st.VirtualSize, st.AllocatedBytes = res.VirtualSize, res.AllocatedBytes
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "Job "+job.Name+" finished")
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, fmt.Sprintf("%s image, CID %s", res.CreateType, res.CID))
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventReady, "image ready: %s, CID %s, %d bytes allocated", res.CreateType, res.CID, res.AllocatedBytes)
		return ctrl.Result{}, r.checkChain(ctx, img)
	}
	reason, msg := failureOf(job, res, pod, failed)
	st.Phase = v1alpha1.PhaseFailed
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, msg)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	r.event(img, corev1.EventTypeWarning, v1alpha1.EventFailed, "%s: %s", reason, msg)
	return ctrl.Result{}, nil
}

// refresh re-reads a Ready image's identity from its files with an
// `imager info` Job (the image and its chain mounted read-only).
func (r *VMDKImageReconciler) refresh(ctx context.Context, img *v1alpha1.VMDKImage, token string) (ctrl.Result, error) {
	st := &img.Status
	var chain []*v1alpha1.VMDKImage
	if img.Spec.BackingImage != nil {
		var wait *waitReason
		var err error
		if chain, wait, err = readyChain(ctx, r.Client, img.Namespace, img.Name, img.Spec.BackingImage.Name, v1alpha1.ReasonWaitingForBacking); err != nil {
			return ctrl.Result{}, err
		} else if wait != nil {
			return ctrl.Result{RequeueAfter: progressInterval}, nil
		}
	}
	volumes, mounts := chainVolumes(append([]*v1alpha1.VMDKImage{img}, chain...))
	p := imagerPod{args: jobapi.InfoArgs{ResultFile: jobapi.ResultPath, Root: imagesDir, Image: imagePath(img.Name)}.Argv(),
		volumes: volumes, mounts: mounts, uid: r.Imager.UID, gid: r.Imager.GID}
	desired := imagerJob(hashedName(img.Name, string(img.UID)+"/"+token, "refresh"), img.Namespace, map[string]string{v1alpha1.LabelImage: img.Name}, p, r.Imager)
	job, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnRefreshJobUID, desired)
	if isForeign(err) {
		st.Refreshed = token
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventRefreshFailed, "re-reading the image refused: %v", err)
		return ctrl.Result{}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	} else if created {
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	if finished, _ := jobFinished(job); !finished {
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	res, _, err := jobResult(ctx, r.Client, job)
	if err != nil {
		return ctrl.Result{}, err
	}
	st.Refreshed = token
	if res == nil || res.Phase != jobapi.Succeeded {
		msg := "no result"
		if res != nil {
			msg = res.Reason + ": " + jobapi.RedactURL(res.Message)
		}
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventRefreshFailed, "re-reading the image failed: %s", msg)
		return ctrl.Result{}, nil
	}
	st.CID, st.ParentCID, st.CreateType = res.CID, res.ParentCID, res.CreateType
	st.VirtualSize, st.AllocatedBytes = res.VirtualSize, res.AllocatedBytes
	r.event(img, corev1.EventTypeNormal, v1alpha1.EventRefreshed, "re-read from its files: CID %s, %d bytes allocated", res.CID, res.AllocatedBytes)
	return ctrl.Result{}, r.checkChain(ctx, img)
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
// self is the image asking, which may not appear in the chain.
func readyChain(ctx context.Context, c client.Reader, ns, self, first, why string) ([]*v1alpha1.VMDKImage, *waitReason, error) {
	var chain []*v1alpha1.VMDKImage
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
				return nil, &waitReason{why, fmt.Sprintf("image %s does not exist yet", name), false}, nil
			}
			return nil, nil, err
		}
		switch {
		case dep.Status.Phase == v1alpha1.PhaseFailed:
			return nil, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("image %s failed", name), false}, nil
		case dep.Status.Phase != v1alpha1.PhaseReady || !dep.DeletionTimestamp.IsZero():
			return nil, &waitReason{why, fmt.Sprintf("waiting for image %s to be Ready (it is %s)", name, orPending(dep.Status.Phase)), false}, nil
		}
		chain = append(chain, dep)
		name = ""
		if dep.Spec.BackingImage != nil {
			name = dep.Spec.BackingImage.Name
		}
	}
	return chain, nil, nil
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
		img.Status.ObservedGeneration = img.Generation
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

// ensurePVC gets or creates the image's PVC, and grows its request when
// spec.storage.size grew.
func (r *VMDKImageReconciler) ensurePVC(ctx context.Context, img *v1alpha1.VMDKImage, sourceSize int64) (*corev1.PersistentVolumeClaim, error) {
	pvc, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnClaimUID, pvcFor(img, nameFor(img, "disk"), sourceSize))
	if err != nil || created {
		return pvc, err
	}
	return pvc, r.growPVC(ctx, img, pvc)
}

// growPVC raises a bound PVC's request to spec.storage.size (Kubernetes
// expands only bound claims; an unbound one is grown once it binds).
func (r *VMDKImageReconciler) growPVC(ctx context.Context, img *v1alpha1.VMDKImage, pvc *corev1.PersistentVolumeClaim) error {
	want := img.Spec.Storage.Size
	have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if want == nil || want.Cmp(have) <= 0 || pvc.Status.Phase != corev1.ClaimBound {
		return nil
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = *want
	if err := r.Patch(ctx, pvc, patch); err != nil {
		return fmt.Errorf("grow PVC %s to %s: %w", pvc.Name, want, err)
	}
	return nil
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
// images flattening it (until they are done).
func (r *VMDKImageReconciler) users(ctx context.Context, img *v1alpha1.VMDKImage) ([]string, error) {
	var out []string
	for _, idx := range []string{indexBacking, indexSource} {
		list := &v1alpha1.VMDKImageList{}
		if err := r.List(ctx, list, client.InNamespace(img.Namespace), client.MatchingFields{idx: img.Name}); err != nil {
			return nil, err
		}
		for _, u := range list.Items {
			if idx == indexSource && (u.Status.Phase == v1alpha1.PhaseReady || u.Status.Phase == v1alpha1.PhaseFailed) {
				continue
			}
			out = append(out, u.Name)
		}
	}
	// And the PVCs populating from it. The images below it in its chain
	// need no check of their own: img is their child, and a child always
	// holds its parent, so a population holds the whole chain.
	pops, err := populationsOf(ctx, r.Client, img.Namespace, img.Name)
	return append(out, pops...), err
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
