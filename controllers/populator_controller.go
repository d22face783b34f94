package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

const (
	// annSelectedNode is set by the scheduler on WaitForFirstConsumer PVCs.
	annSelectedNode = "volume.kubernetes.io/selected-node"
	// annProvisionedBy is set by the provisioner on the PVs it creates.
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"

	indexDataSource = "spec.dataSourceRef.vmdkimage"
	targetDir       = "/target"
	targetDevice    = "/dev/vmdkpop-target"
)

// PopulatorReconciler fills PVCs whose dataSourceRef names a VMDKImage:
// an imager Job writes the image's content into a prime PVC, whose volume
// is then handed to the user's PVC.
type PopulatorReconciler struct {
	client.Client
	// APIReader reads past the cache: the prime PVC's events, and the
	// live owner and child before a child is refused as foreign.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Logs      PodLogReader
	Imager    ImagerConfig
	// UID and GID that own disk.img: KubeVirt's qemu runs as 107.
	DiskUID, DiskGID int64

	copied  sync.Map      // UIDs of prime-PVC events already copied
	blocked blockerEvents // the blockers told of in events
}

// Least privilege: each verb below is one the populator calls (the
// envtest suite runs the manager under the generated role and fails on
// a verb granted but never used). Reads go through the manager's cache,
// which lists and watches; get is for the live reads that confirm a
// refusal (owned.go). PVs: only read and the claimRef patch.
// PVC finalizers: the OwnerReferencesPermissionEnforcement admission
// plugin requires update on them to create a prime PVC or Job with
// blockOwnerDeletion.
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=persistentvolumes,verbs=list;watch;patch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=list
// +kubebuilder:rbac:groups=populator.storage.k8s.io,resources=volumepopulators,verbs=get;create

// dataSourceImage returns the VMDKImage a PVC wants to be filled from.
func dataSourceImage(pvc *corev1.PersistentVolumeClaim) (string, bool) {
	ref := pvc.Spec.DataSourceRef
	if ref == nil || ref.APIGroup == nil || *ref.APIGroup != v1alpha1.GroupVersion.Group || ref.Kind != "VMDKImage" {
		return "", false
	}
	if ref.Namespace != nil && *ref.Namespace != "" && *ref.Namespace != pvc.Namespace {
		return "", false // cross-namespace sources need ReferenceGrants: not supported
	}
	return ref.Name, true
}

func (r *PopulatorReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Get(ctx, req.NamespacedName, pvc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	imageName, ok := dataSourceImage(pvc)
	if !ok {
		return ctrl.Result{}, nil
	}
	if !pvc.DeletionTimestamp.IsZero() || pvc.Status.Phase == corev1.ClaimBound {
		// Deleted mid-way, or populated: nothing of ours may outlive it.
		if err := r.cleanup(ctx, pvc); err != nil {
			return ctrl.Result{}, err
		}
		if pvc.DeletionTimestamp.IsZero() && (pvc.Annotations[v1alpha1.AnnPrimeUID] != "" || pvc.Annotations[v1alpha1.AnnPopulateJobUID] != "") {
			// Cleaned up: forgotten, so the Bound PVC's next events send
			// no deletes of what is gone already (cleanup skips a PVC
			// with nothing recorded).
			if err := r.patchAnnotations(ctx, pvc, map[string]string{v1alpha1.AnnPrimeUID: "", v1alpha1.AnnPopulateJobUID: ""}); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
		}
		if pvc.DeletionTimestamp.IsZero() && pvc.Annotations[v1alpha1.AnnPhase] != v1alpha1.PopSucceeded && pvc.Annotations[v1alpha1.AnnPhase] != v1alpha1.PopFailed {
			if v := pvc.Annotations[v1alpha1.AnnVolume]; v != "" && v == pvc.Spec.VolumeName {
				r.annotate(ctx, pvc, v1alpha1.PopSucceeded, "100%", "")
			} else {
				// Something else bound it first: its volume holds no image.
				r.fail(ctx, pvc, v1alpha1.EventPopulatorFailed, fmt.Sprintf("the PVC was bound to volume %s, which vmdkpop did not fill: "+
					"the storage class's provisioner must leave PVCs with a dataSourceRef to their populator", pvc.Spec.VolumeName))
			}
		}
		if controllerutil.RemoveFinalizer(pvc, v1alpha1.PopulatorFinalizer) {
			return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, pvc))
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(pvc, v1alpha1.PopulatorFinalizer) {
		if err := r.Update(ctx, pvc); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A failed attempt only waits for its retry: its Job is never run
	// again, even once the TTL controller has removed it.
	if res, done, err := r.afterFailure(ctx, pvc); done {
		return res, err
	}
	if handed, err := r.handedOver(ctx, pvc); handed || err != nil {
		return ctrl.Result{RequeueAfter: progressInterval}, err
	}

	// The image and its chain must be Ready.
	chain, wait, err := readyChain(ctx, r.Client, pvc.Namespace, "", imageName, v1alpha1.ReasonWaitingForSource)
	if err != nil {
		return ctrl.Result{}, err
	}
	if wait != nil && pvc.Annotations[v1alpha1.AnnPopulateJobUID] == "" {
		r.wait(ctx, pvc, wait.message)
		return ctrl.Result{}, nil // the image watch brings us back
	}
	// An attempt under way goes on even if its image is being deleted
	// meanwhile (the image waits for it: populationsOf); it only starts
	// no new Job (chain is nil).

	// The storage class decides where the volume can be made.
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName == "" {
		r.wait(ctx, pvc, "the PVC has no storage class: the populator needs one to make the volume")
		return ctrl.Result{}, nil
	}
	sc := &storagev1.StorageClass{}
	if err := r.Get(ctx, types.NamespacedName{Name: *pvc.Spec.StorageClassName}, sc); err != nil {
		if apierrors.IsNotFound(err) {
			r.wait(ctx, pvc, fmt.Sprintf("storage class %s does not exist", *pvc.Spec.StorageClassName))
			return ctrl.Result{RequeueAfter: progressInterval}, nil
		}
		return ctrl.Result{}, err
	}
	node := ""
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
		if node = pvc.Annotations[annSelectedNode]; node == "" {
			r.annotate(ctx, pvc, v1alpha1.PopPending, "", "waiting for a pod that uses the PVC to be scheduled (WaitForFirstConsumer)")
			return ctrl.Result{}, nil
		}
	}

	// Too small a PVC is refused before any work, with the size it needs.
	if chain != nil {
		if msg := tooSmall(pvc, chain[0].Status.VirtualSize); msg != "" {
			r.fail(ctx, pvc, v1alpha1.EventPVCTooSmall, msg)
			return ctrl.Result{}, nil
		}
	}

	// A prime PVC deleted or replaced mid-way holds none of the image:
	// the attempt starts over rather than hand it over.
	switch lost, err := r.primeLost(ctx, pvc); {
	case err == errStale:
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	case err != nil:
		return ctrl.Result{}, err
	case lost:
		return r.restart(ctx, pvc, restartPrimeLost, "")
	}
	prime, err := r.ensurePrime(ctx, pvc, node)
	if err != nil {
		return r.refuse(ctx, pvc, err)
	}
	if chain != nil && pvc.Annotations[v1alpha1.AnnPopulateJobUID] == "" {
		// The image was Ready in the cache; it must still be, live, before
		// a Job reads it (see imageGoing).
		if going, err := r.imageGoing(ctx, pvc.Namespace, imageName); err != nil {
			return ctrl.Result{}, err
		} else if going {
			chain, wait = nil, &waitReason{v1alpha1.ReasonWaitingForSource, fmt.Sprintf("image %s is being deleted", imageName), false}
		}
	}
	job, err := r.ensureJob(ctx, pvc, prime, chain, node)
	if apierrors.IsNotFound(err) && wait != nil {
		// The Job is gone (deleted, or its TTL ran out before its end was
		// seen) or was never made, and no new one may read the image: the
		// attempt is over,
		// and ending it lets the image go (populating is false once no
		// prime is recorded). The next attempt waits for the image.
		return r.restart(ctx, pvc, restartJobGone, "")
	} else if err != nil {
		return r.refuse(ctx, pvc, err)
	}
	if job.Labels[v1alpha1.LabelPrime] != string(prime.UID) {
		// The recorded Job was made for another prime PVC: what it
		// wrote is not in this one.
		return r.restart(ctx, pvc, restartPrimeLost, "")
	}
	r.copyPrimeEvents(ctx, pvc, prime)
	finished, failed := jobFinished(job)
	if !finished {
		progress := ""
		if p, ok := r.progressOf(ctx, job); ok {
			progress = p
		}
		r.annotate(ctx, pvc, v1alpha1.PopPopulating, progress, r.jobBlockerNote(ctx, pvc, prime, job))
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	if failed {
		return r.attemptFailed(ctx, pvc, job)
	}
	return r.rebind(ctx, pvc, prime)
}

// foreignRecheck is how often an image refused for a squatter looks
// again: deleting a squatter does not wake the controller (it owns
// nothing of ours).
const foreignRecheck = 30 * time.Second

// refuse records a refusal of a foreign object on the PVC, or returns any
// other error for a retry.
func (r *PopulatorReconciler) refuse(ctx context.Context, pvc *corev1.PersistentVolumeClaim, err error) (ctrl.Result, error) {
	if b := quotaBlocker(err); b != nil {
		r.annotate(ctx, pvc, v1alpha1.PopPending, "", r.blockerNote(pvc, b))
		return ctrl.Result{RequeueAfter: quotaRecheck}, nil
	}
	if !isForeign(err) {
		return ctrl.Result{}, err
	}
	r.fail(ctx, pvc, v1alpha1.ReasonForeignObject, err.Error())
	return ctrl.Result{}, nil // the retry annotation's watch brings us back
}

// tooSmall says why a PVC cannot hold a disk of size bytes, or "".
func tooSmall(pvc *corev1.PersistentVolumeClaim, size int64) string {
	req := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	block := pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock
	mode := jobapi.Filesystem
	if block {
		mode = jobapi.Block
	}
	need := jobapi.RequiredBytes(size, mode)
	switch {
	case req.Value() >= need:
		return ""
	case block:
		return fmt.Sprintf("the PVC requests %s but the image's virtual size is %d bytes: request at least %s", req.String(), size, resource.NewQuantity(need, resource.BinarySI))
	}
	return fmt.Sprintf("the PVC requests %s but the image's virtual size is %d bytes, and a filesystem keeps %.0f%% for itself: request at least %s",
		req.String(), size, jobapi.FSOverhead*100, resource.NewQuantity(need, resource.BinarySI))
}

// ensurePrime gets or creates the prime PVC: the user's PVC without its
// data source, the volume the Job writes and then hands over.
func (r *PopulatorReconciler) ensurePrime(ctx context.Context, pvc *corev1.PersistentVolumeClaim, node string) (*corev1.PersistentVolumeClaim, error) {
	prime := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: primeName(pvc, "prime"), Namespace: pvc.Namespace, Labels: managedLabels(map[string]string{v1alpha1.LabelPopulates: string(pvc.UID)})},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: pvc.Spec.StorageClassName,
			AccessModes:      pvc.Spec.AccessModes,
			Resources:        corev1.VolumeResourceRequirements{Requests: pvc.Spec.Resources.Requests},
			VolumeMode:       pvc.Spec.VolumeMode,
		},
	}
	if node != "" {
		prime.Annotations = map[string]string{annSelectedNode: node}
	}
	prime, _, err := ensureChild(ctx, r.Client, r.APIReader, pvc, v1alpha1.AnnPrimeUID, prime)
	return prime, err
}

// ensureJob gets or creates the Job writing the image's content into the
// prime PVC: disk.img on a Filesystem volume, the device in Block mode.
// Without a chain (its image is being deleted), only the recorded Job is
// looked for: NotFound if it is gone.
func (r *PopulatorReconciler) ensureJob(ctx context.Context, pvc, prime *corev1.PersistentVolumeClaim, chain []*v1alpha1.VMDKImage, node string) (*batchv1.Job, error) {
	if chain == nil {
		job := &batchv1.Job{}
		return job, getChild(ctx, r.Client, r.APIReader, pvc, v1alpha1.AnnPopulateJobUID, primeName(pvc, "populate"), job)
	}
	p := imagerPod{uid: r.DiskUID, gid: r.DiskGID, node: node}
	p.volumes, p.mounts = chainVolumes(chain)
	p.volumes = append(p.volumes, pvcVolume("target", prime.Name, false))
	target := targetDir
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		target = targetDevice
		p.devices = []corev1.VolumeDevice{{Name: "target", DevicePath: targetDevice}}
	} else {
		p.mounts = append(p.mounts, corev1.VolumeMount{Name: "target", MountPath: targetDir})
	}
	p.args = jobapi.ImportArgs{ResultFile: jobapi.ResultPath, Target: target, TargetFormat: "raw", FSOverhead: jobapi.FSOverhead,
		Root: imagesDir, Source: imagePath(chain[0].Name)}.Argv()
	labels := map[string]string{v1alpha1.LabelPopulates: string(pvc.UID), v1alpha1.LabelPrime: string(prime.UID)}
	job := imagerJob(primeName(pvc, "populate"), pvc.Namespace, labels, p, r.Imager)
	job, created, err := ensureChild(ctx, r.Client, r.APIReader, pvc, v1alpha1.AnnPopulateJobUID, job)
	if created {
		r.event(pvc, corev1.EventTypeNormal, v1alpha1.EventPopulatorStarted, "Job %s writes VMDKImage %s into PVC %s", job.Name, chain[0].Name, prime.Name)
	}
	return job, err
}

// rebind hands the prime PVC's volume to the user's PVC: the PV's claimRef
// moves to the user's PVC, the PV controller binds it and marks the prime
// PVC Lost, and then the prime PVC and the Job are deleted.
//
// This is the populator's one cluster-scoped write, so it is made only on
// a PV proven to be the prime's own (see verifyPrimeVolume).
func (r *PopulatorReconciler) rebind(ctx context.Context, pvc, prime *corev1.PersistentVolumeClaim) (ctrl.Result, error) {
	if prime.Spec.VolumeName == "" {
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	pv := &corev1.PersistentVolume{}
	if err := r.Get(ctx, types.NamespacedName{Name: prime.Spec.VolumeName}, pv); err != nil {
		return ctrl.Result{}, err
	}
	if msg := verifyPrimeVolume(pvc, prime, pv); msg != "" {
		r.fail(ctx, pvc, v1alpha1.ReasonVolumeNotVerified, msg)
		return ctrl.Result{}, nil
	}
	if pvc.Annotations[v1alpha1.AnnVolume] != pv.Name {
		// Recorded first: once bound, this is how the PVC's volume is
		// known to hold the image.
		patch := client.MergeFrom(pvc.DeepCopy())
		if pvc.Annotations == nil {
			pvc.Annotations = map[string]string{}
		}
		pvc.Annotations[v1alpha1.AnnVolume] = pv.Name
		if err := r.Patch(ctx, pvc, patch); err != nil {
			return ctrl.Result{}, err
		}
	}
	// The patch carries the PV's resourceVersion: if the PV changed since
	// it was verified, the write fails and the next reconcile verifies
	// again.
	patch := client.MergeFromWithOptions(pv.DeepCopy(), client.MergeFromWithOptimisticLock{})
	pv.Spec.ClaimRef = &corev1.ObjectReference{
		Kind: "PersistentVolumeClaim", APIVersion: "v1",
		Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
	}
	if err := r.Patch(ctx, pv, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("rebind PV %s: %w", pv.Name, err)
	}
	r.annotate(ctx, pvc, v1alpha1.PopPopulating, "100%", "binding the populated volume "+pv.Name)
	r.event(pvc, corev1.EventTypeNormal, v1alpha1.EventPopulatorFinished, "populated volume %s handed to this PVC", pv.Name)
	return ctrl.Result{RequeueAfter: progressInterval}, nil
}

// verifyPrimeVolume says why pv may not be handed to pvc, or "". The
// prime PVC was verified by UID, but what it is bound to is the PV
// controller's word and the PV's: the prime must be Bound to pv, pv's
// claimRef must name the prime by UID (so pv is no one else's volume,
// whatever the prime's spec.volumeName says), and pv must be of the
// storage class the user asked for.
func verifyPrimeVolume(pvc, prime *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) string {
	ref := pv.Spec.ClaimRef
	switch {
	case prime.Status.Phase != corev1.ClaimBound || prime.Spec.VolumeName != pv.Name:
		return fmt.Sprintf("prime PVC %s is not Bound to PV %s: refusing to hand that volume over", prime.Name, pv.Name)
	case ref == nil || ref.UID != prime.UID || ref.Namespace != prime.Namespace || ref.Name != prime.Name:
		return fmt.Sprintf("PV %s is not bound to prime PVC %s (its claimRef names another claim): refusing to hand it over", pv.Name, prime.Name)
	case pvc.Spec.StorageClassName == nil || pv.Spec.StorageClassName != *pvc.Spec.StorageClassName:
		return fmt.Sprintf("PV %s is of storage class %q, not the PVC's: refusing to hand it over", pv.Name, pv.Spec.StorageClassName)
	}
	return ""
}

// cleanup deletes the current attempt's prime PVC and Job (of a
// populated or deleted PVC, or of an attempt that is over): only the ones
// recorded as created for it. The Job goes first, so nothing writes the
// prime PVC once it is gone; the prime's volume goes with it even on a
// Retain class (reclaimPrimeVolume).
func (r *PopulatorReconciler) cleanup(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Annotations[v1alpha1.AnnPrimeUID] == "" && pvc.Annotations[v1alpha1.AnnPopulateJobUID] == "" {
		return nil // nothing of ours was made, or it was cleaned up already
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: primeName(pvc, "populate")}}
	if err := deleteChild(ctx, r.Client, pvc, job, v1alpha1.AnnPopulateJobUID); err != nil {
		return fmt.Errorf("delete Job %s: %w", job.Name, err)
	}
	prime := &corev1.PersistentVolumeClaim{}
	switch err := getChild(ctx, r.Client, r.APIReader, pvc, v1alpha1.AnnPrimeUID, primeName(pvc, "prime"), prime); {
	case err == nil:
		if err := r.reclaimPrimeVolume(ctx, pvc, prime); err != nil {
			return err
		}
	case apierrors.IsNotFound(err) || isForeign(err):
		if err := r.reclaimLostPrimeVolume(ctx, pvc); err != nil {
			return err
		}
	default:
		return err
	}
	prime = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: primeName(pvc, "prime")}}
	if err := deleteChild(ctx, r.Client, pvc, prime, v1alpha1.AnnPrimeUID); err != nil {
		return fmt.Errorf("delete prime PVC %s: %w", prime.Name, err)
	}
	return nil
}

// handedOver reports whether the populated volume's claimRef already names
// the user's PVC: the PV controller binds it, and the PVC's Bound status
// brings the populator back to clean up. The prime PVC is not needed any
// more (the PV controller marks it Lost), so nothing of it is looked at.
func (r *PopulatorReconciler) handedOver(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (bool, error) {
	name := pvc.Annotations[v1alpha1.AnnVolume]
	if name == "" {
		return false, nil
	}
	pv := &corev1.PersistentVolume{}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, pv); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	ref := pv.Spec.ClaimRef
	return ref != nil && ref.UID == pvc.UID, nil
}

func (r *PopulatorReconciler) progressOf(ctx context.Context, job *batchv1.Job) (string, bool) {
	return jobProgress(ctx, r.Client, r.Logs, job)
}

// copyPrimeEvents repeats the prime PVC's warnings (a provisioner that
// failed, a volume that cannot attach) on the user's PVC, where users look.
func (r *PopulatorReconciler) copyPrimeEvents(ctx context.Context, pvc, prime *corev1.PersistentVolumeClaim) {
	evs, err := warningEvents(ctx, r.APIReader, prime, "PersistentVolumeClaim")
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the prime PVC's events", "prime", prime.Name)
		return
	}
	for _, e := range evs {
		if _, done := r.copied.LoadOrStore(e.UID, true); done {
			continue
		}
		r.event(pvc, corev1.EventTypeWarning, e.Reason, "prime PVC %s: %s", prime.Name, e.Message)
	}
}

// wait records why the PVC waits, with an event when the reason changes.
func (r *PopulatorReconciler) wait(ctx context.Context, pvc *corev1.PersistentVolumeClaim, msg string) {
	if pvc.Annotations[v1alpha1.AnnMessage] != msg {
		r.event(pvc, corev1.EventTypeNormal, v1alpha1.EventPopulatorWaiting, "%s", msg)
	}
	r.annotate(ctx, pvc, v1alpha1.PopPending, "", msg)
}

// fail records a failure that retrying will not fix (a refusal, a PVC
// too small) as the attempt's failed-attempt record, as attemptFailed
// does a permanent one: the population then holds nothing of its image
// (populating), and the user's retry annotation starts a fresh attempt,
// whose prime PVC and Job get new names. The event is sent with the
// record, once.
func (r *PopulatorReconciler) fail(ctx context.Context, pvc *corev1.PersistentVolumeClaim, reason, msg string) {
	if pvc.Annotations[v1alpha1.AnnPopFailedAt] != "" {
		return // recorded: afterFailure waits for the retry annotation
	}
	msg += fmt.Sprintf("; not retried: fix the cause, then set annotation %s to a new value to try again", v1alpha1.AnnotationRetry)
	set := map[string]string{v1alpha1.AnnPhase: v1alpha1.PopFailed, v1alpha1.AnnProgress: "", v1alpha1.AnnMessage: msg,
		v1alpha1.AnnPopFailedAt: time.Now().UTC().Format(time.RFC3339), v1alpha1.AnnPopRetryAt: ""}
	if err := r.patchAnnotations(ctx, pvc, set); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "recording the failed attempt") // a conflict: the next reconcile records it
		return
	}
	r.event(pvc, corev1.EventTypeWarning, reason, "%s", msg)
}

// annotate mirrors the population's phase, progress and message onto the
// user's PVC.
func (r *PopulatorReconciler) annotate(ctx context.Context, pvc *corev1.PersistentVolumeClaim, phase, progress, msg string) {
	a := pvc.Annotations
	if a[v1alpha1.AnnPhase] == phase && a[v1alpha1.AnnProgress] == progress && a[v1alpha1.AnnMessage] == msg {
		return
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	set := func(k, v string) {
		if v == "" {
			delete(pvc.Annotations, k)
		} else {
			pvc.Annotations[k] = v
		}
	}
	set(v1alpha1.AnnPhase, phase)
	set(v1alpha1.AnnProgress, progress)
	set(v1alpha1.AnnMessage, msg)
	if err := r.Patch(ctx, pvc, patch); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "annotating the PVC")
	}
}

func (r *PopulatorReconciler) event(pvc *corev1.PersistentVolumeClaim, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(pvc, nil, typ, reason, "Populate", format, args...)
	}
}

// SetupWithManager watches PVCs that name a VMDKImage, their prime PVCs
// and Jobs, and the images (a change enqueues the PVCs waiting for it).
// The indexDataSource index it registers is the image reconciler's too
// (populatedImage).
func (r *PopulatorReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.PersistentVolumeClaim{}, indexDataSource, func(o client.Object) []string {
		if name, ok := dataSourceImage(o.(*corev1.PersistentVolumeClaim)); ok {
			return []string{name}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.PersistentVolume{}, indexClaimUID, claimUIDOf); err != nil {
		return err
	}
	wanted := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := dataSourceImage(o.(*corev1.PersistentVolumeClaim))
		return ok
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("populator").
		For(&corev1.PersistentVolumeClaim{}, builder.WithPredicates(wanted)).
		Owns(&batchv1.Job{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Watches(&v1alpha1.VMDKImage{}, handler.EnqueueRequestsFromMapFunc(r.pvcsOf)).
		Complete(r)
}

// pvcsOf maps an image to the PVCs populating from it (or from a child of
// it: a chain's change concerns its children's consumers too, but only the
// image named matters for readiness).
func (r *PopulatorReconciler) pvcsOf(ctx context.Context, o client.Object) []ctrl.Request {
	list := &corev1.PersistentVolumeClaimList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexDataSource: o.GetName()}); err != nil {
		// A map function cannot return an error: those PVCs are
		// reconciled at their next event instead.
		ctrl.LoggerFrom(ctx).Error(err, "listing the PVCs populated from an image", "image", o.GetName())
		return nil
	}
	reqs := make([]ctrl.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
	}
	return reqs
}
