package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Why a wait makes no progress, told where users look (an image's
// conditions, a PVC's annotations and events) rather than left in a pod's
// status, another object's events or the manager's log: a Job whose pod
// cannot be scheduled or pull its image, volumes that cannot mount, a PVC
// nothing will bind, a quota that refuses what the controller creates.
// Both reconcilers ask the same functions; each shows the answer its own
// way (the adapters at the end).
//
// Only objects the controller made are read for this: pods controlled by
// the recorded Job's UID, events naming an object's UID (anyone who can
// write events in a namespace can name any object there by its name).

// quotaRecheck is how soon a creation a ResourceQuota refused is tried
// again: quotas change by hand, and nothing of ours watches them.
const quotaRecheck = 15 * time.Second

// maxBlockerMessage bounds what is copied from a pod's status or an event
// into a condition or an annotation.
const maxBlockerMessage = 1024

// Waiting reasons of a container that make a pod wait for the user.
var (
	pullFailures   = []string{"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
	createFailures = []string{"CreateContainerConfigError", "CreateContainerError"}
)

// Warning event reasons: of the kubelet and the attach/detach controller
// about a pod's volumes; of provisioners and the PV controller about a
// PVC; of the Job controller about the pods it could not create.
var (
	mountFailures = []string{"FailedMount", "FailedAttachVolume", "FailedMapVolume"}
	claimFailures = []string{"ProvisioningFailed", "FailedBinding"}
	podCreateFail = []string{"FailedCreate"}
)

// blocker is what keeps a wait from ending: a constant reason (one of
// v1alpha1's blocker reasons) and a message saying what to do.
type blocker struct{ reason, message string }

func (b *blocker) String() string { return b.reason + ": " + b.message }

func newBlocker(reason, format string, args ...any) *blocker {
	// Redacted whole (a cut URL might not be recognised), then cut on a
	// character boundary.
	msg := jobapi.RedactURL(fmt.Sprintf(format, args...))
	if len(msg) > maxBlockerMessage {
		msg = strings.ToValidUTF8(msg[:maxBlockerMessage], "") + "..."
	}
	return &blocker{reason: reason, message: msg}
}

// blockerOf says why a Job that has not finished makes no progress, or
// nil: first what keeps a PVC it writes from binding (claims: the PVCs the
// controller made for it, already verified by UID), then what keeps its
// pod from running. Reading is best effort: what cannot be read is logged
// and taken as no blocker, so the reconcile goes on.
func blockerOf(ctx context.Context, c, live client.Reader, job *batchv1.Job, claims ...*corev1.PersistentVolumeClaim) *blocker {
	log := ctrl.LoggerFrom(ctx)
	for _, pvc := range claims {
		if pvc == nil {
			continue
		}
		b, err := claimBlocker(ctx, c, live, pvc)
		if err != nil {
			log.Error(err, "reading why a PVC is not bound", "pvc", pvc.Name)
		}
		if b != nil {
			return b
		}
	}
	b, err := jobBlocker(ctx, c, live, job)
	if err != nil {
		log.Error(err, "reading why a Job makes no progress", "job", job.Name)
	}
	return b
}

// claimBlocker says why pvc is not Bound, when something says so. Under
// WaitForFirstConsumer a PVC waits for its consumer, the Job's pod: then
// the pod's blocker (the scheduler's message) is the answer.
func claimBlocker(ctx context.Context, c, live client.Reader, pvc *corev1.PersistentVolumeClaim) (*blocker, error) {
	if pvc.Status.Phase == corev1.ClaimBound {
		return nil, nil
	}
	if b, err := classBlocker(ctx, c, pvc); b != nil || err != nil {
		return b, err
	}
	evs, err := warningEvents(ctx, live, pvc, "PersistentVolumeClaim", claimFailures...)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	e := evs[len(evs)-1]
	return newBlocker(v1alpha1.ReasonClaimPending, "PVC %s is not bound: %s: %s", pvc.Name, e.Reason, e.Message), nil
}

// classBlocker says why pvc's storage class cannot give it a volume: it
// names none and the cluster has no default, or one that does not exist.
func classBlocker(ctx context.Context, c client.Reader, pvc *corev1.PersistentVolumeClaim) (*blocker, error) {
	name := pvc.Spec.StorageClassName
	switch {
	case name == nil:
		list := &storagev1.StorageClassList{}
		if err := c.List(ctx, list); err != nil {
			return nil, fmt.Errorf("list storage classes: %w", err)
		}
		for i := range list.Items {
			if isDefaultClass(&list.Items[i]) {
				return nil, nil // the PV controller gives the PVC this class
			}
		}
		return newBlocker(v1alpha1.ReasonClaimPending, "PVC %s names no storage class and the cluster has no default StorageClass: name one "+
			"(a VMDKImage's spec.storage.storageClassName) or mark one as the default (annotation %s: \"true\"); until then only a PV made by hand without a class can bind it",
			pvc.Name, annDefaultClass), nil
	case *name == "":
		return newBlocker(v1alpha1.ReasonClaimPending, "PVC %s asks for no storage class (storageClassName \"\"): nothing provisions a volume for it, only a PV made by hand without a class can bind it", pvc.Name), nil
	}
	sc := &storagev1.StorageClass{}
	switch err := c.Get(ctx, types.NamespacedName{Name: *name}, sc); {
	case apierrors.IsNotFound(err):
		return newBlocker(v1alpha1.ReasonClaimPending, "PVC %s names storage class %s, which does not exist: create it, or name another", pvc.Name, *name), nil
	case err != nil:
		return nil, fmt.Errorf("read storage class %s: %w", *name, err)
	}
	return nil, nil
}

// The annotations marking a StorageClass as the cluster's default (the
// beta one is still honoured by the DefaultStorageClass admission plugin).
const (
	annDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	annBetaDefaultClass = "storageclass.beta.kubernetes.io/is-default-class"
)

func isDefaultClass(sc *storagev1.StorageClass) bool {
	return sc.Annotations[annDefaultClass] == "true" || sc.Annotations[annBetaDefaultClass] == "true"
}

// jobBlocker says why job's pod does not run: the newest pending pod's
// blocker, or, when the Job has no pod alive, why the Job controller
// could not create one. A running pod is progress: nil.
func jobBlocker(ctx context.Context, c, live client.Reader, job *batchv1.Job) (*blocker, error) {
	pods, err := jobPods(ctx, c, job)
	if err != nil {
		return nil, err
	}
	var pending *corev1.Pod
	var newest time.Time
	for i := range pods {
		p := &pods[i]
		if p.CreationTimestamp.After(newest) {
			newest = p.CreationTimestamp.Time
		}
		switch {
		case !p.DeletionTimestamp.IsZero():
		case p.Status.Phase == corev1.PodRunning:
			return nil, nil
		case p.Status.Phase == corev1.PodPending && (pending == nil || p.CreationTimestamp.After(pending.CreationTimestamp.Time)):
			pending = p
		}
	}
	if pending != nil {
		return podBlocker(ctx, live, pending)
	}
	evs, err := warningEvents(ctx, live, job, "Job", podCreateFail...)
	if err != nil {
		return nil, err
	}
	// Only a refusal since the last pod was made: an older one is over.
	for i := len(evs) - 1; i >= 0; i-- {
		if e := evs[i]; eventTime(&e).After(newest) {
			reason := v1alpha1.ReasonPodCreateFailed
			if strings.Contains(e.Message, "exceeded quota") {
				reason = v1alpha1.ReasonQuotaExceeded
			}
			return newBlocker(reason, "Job %s cannot create its pod: %s", job.Name, e.Message), nil
		}
	}
	return nil, nil
}

// podBlocker says why a pending pod of ours does not start: the
// scheduler cannot place it, its image cannot be pulled or its container
// created, or its volumes cannot be attached or mounted. A pod pending
// for none of these (being scheduled, pulling, starting) has no blocker.
func podBlocker(ctx context.Context, live client.Reader, p *corev1.Pod) (*blocker, error) {
	scheduled := p.Spec.NodeName != ""
	for _, c := range p.Status.Conditions {
		if c.Type != corev1.PodScheduled {
			continue
		}
		if c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return newBlocker(v1alpha1.ReasonUnschedulable, "pod %s cannot be scheduled: %s", p.Name, c.Message), nil
		}
		scheduled = scheduled || c.Status == corev1.ConditionTrue
	}
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		w := cs.State.Waiting
		switch {
		case w == nil:
		case slices.Contains(pullFailures, w.Reason):
			return newBlocker(v1alpha1.ReasonImagePullFailed, "pod %s cannot pull image %s (%s: %s): check the manager's --imager-image and that the node can reach its registry",
				p.Name, cs.Image, w.Reason, w.Message), nil
		case slices.Contains(createFailures, w.Reason):
			return newBlocker(v1alpha1.ReasonContainerCreateFailed, "pod %s cannot create container %s (%s: %s)", p.Name, cs.Name, w.Reason, w.Message), nil
		}
	}
	if !scheduled {
		return nil, nil
	}
	evs, err := warningEvents(ctx, live, p, "Pod", mountFailures...)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	e := evs[len(evs)-1]
	return newBlocker(v1alpha1.ReasonMountFailed, "pod %s cannot attach or mount its volumes on node %s (%s: %s)", p.Name, p.Spec.NodeName, e.Reason, e.Message), nil
}

// quotaBlocker is a create refused by a ResourceQuota (the API's
// Forbidden "exceeded quota", with the quota's numbers) as a wait, or nil
// for any other error. Retried soon and often, it would only fill the log.
func quotaBlocker(err error) *blocker {
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "exceeded quota") {
		return nil
	}
	return newBlocker(v1alpha1.ReasonQuotaExceeded, "%v: raise the namespace's ResourceQuota or free what it counts (retried every %s)", err, quotaRecheck)
}

// deviceHint completes the failure of a Block population whose imager
// could not open the device: the kubelet hands the pod the node's device
// node as it is (root's, mode 0600 for a loop device), fsGroup does not
// apply to devices, and only a runtime that honours the pod's security
// context gives runAsUser/runAsGroup the device.
func deviceHint(pvc *corev1.PersistentVolumeClaim, reason, msg string) string {
	if pvc.Spec.VolumeMode == nil || *pvc.Spec.VolumeMode != corev1.PersistentVolumeBlock || reason != jobapi.ReasonTargetNotWritable {
		return msg
	}
	return msg + ": the container runtime did not give the pod's user the block device; enable device_ownership_from_security_context " +
		"(containerd: in the CRI plugin's config; CRI-O: in [crio.runtime]) on the nodes"
}

// warningEvents lists the Warning events about obj (of kind) whose reason
// is one of reasons, oldest first. They are listed live (events are not
// cached) and by UID: an event naming obj's name may be anyone's.
func warningEvents(ctx context.Context, live client.Reader, obj client.Object, kind string, reasons ...string) ([]corev1.Event, error) {
	if live == nil {
		return nil, nil
	}
	list := &corev1.EventList{}
	if err := live.List(ctx, list, client.InNamespace(obj.GetNamespace()),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.uid", string(obj.GetUID()))}); err != nil {
		return nil, fmt.Errorf("list the events of %s %s: %w", kind, obj.GetName(), err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Type != corev1.EventTypeWarning || e.InvolvedObject.Kind != kind || e.InvolvedObject.UID != obj.GetUID() {
			continue
		}
		if len(reasons) > 0 && !slices.Contains(reasons, e.Reason) {
			continue
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b corev1.Event) int { return eventTime(&a).Compare(eventTime(&b)) })
	return out, nil
}

// eventTime is when an event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// How each reconciler shows a blocker.

// isBlockerReason tells a blocker's reason from the others of a condition.
func isBlockerReason(reason string) bool {
	switch reason {
	case v1alpha1.ReasonUnschedulable, v1alpha1.ReasonImagePullFailed, v1alpha1.ReasonContainerCreateFailed, v1alpha1.ReasonMountFailed,
		v1alpha1.ReasonPodCreateFailed, v1alpha1.ReasonClaimPending, v1alpha1.ReasonQuotaExceeded:
		return true
	}
	return false
}

// blockerEvents remembers, per object UID, the blocker last told of in an
// event: the object read from the cache may not hold yet the condition or
// annotation the reconcile before wrote, and the event must not repeat.
// After a restart, what the object shows is the memory.
type blockerEvents struct{ told sync.Map }

// news reports whether reason (of the object uid, which shows the blocker
// reason shown) is to be told, and remembers it; "" forgets the object.
func (t *blockerEvents) news(uid types.UID, reason, shown string) bool {
	if reason == "" {
		t.told.Delete(uid)
		return false
	}
	if prev, ok := t.told.Swap(uid, reason); ok {
		return prev.(string) != reason
	}
	return shown != reason
}

// showJobBlocker puts what blocks an image's running Job (or its PVC,
// verified by UID already) on its conditions, after observeJob set them
// for a Job that runs.
func (r *VMDKImageReconciler) showJobBlocker(ctx context.Context, img *v1alpha1.VMDKImage, claim *corev1.PersistentVolumeClaim, job *batchv1.Job) {
	r.setBlocked(img, blockerOf(ctx, r.Client, r.APIReader, job, claim), metav1.ConditionTrue)
}

// setBlocked shows b on the image: Progressing keeps progressing (the
// Job exists and may yet run: True) or not (nothing was created: False),
// Ready's reason is b's (kubectl get's REASON column), and a Warning event
// tells of each new blocker, not of each reconcile. With b nil, a Ready
// that still names an earlier blocker says the work goes on again.
func (r *VMDKImageReconciler) setBlocked(img *v1alpha1.VMDKImage, b *blocker, progressing metav1.ConditionStatus) {
	ready := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
	shown := ""
	if ready != nil {
		shown = ready.Reason
	}
	if b == nil {
		r.blocked.news(img.UID, "", shown)
		if isBlockerReason(shown) {
			r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonJobRunning, string(operationOf(img))+" in progress")
		}
		return
	}
	if r.blocked.news(img.UID, b.reason, shown) {
		r.event(img, corev1.EventTypeWarning, b.reason, "%s", b.message)
	}
	msg := b.message
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionProgressing); c != nil && c.Reason == v1alpha1.ReasonJobRunning {
		msg += "; " + c.Message
	}
	r.setCondition(img, v1alpha1.ConditionProgressing, progressing, b.reason, msg)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, b.reason, b.message)
}

// jobBlockerNote is what blocks a population's running Job, as the user's
// PVC's message ("" when nothing does).
func (r *PopulatorReconciler) jobBlockerNote(ctx context.Context, pvc, prime *corev1.PersistentVolumeClaim, job *batchv1.Job) string {
	return r.blockerNote(pvc, blockerOf(ctx, r.Client, r.APIReader, job, prime))
}

// blockerNote words b as the user's PVC's message ("Reason: message"),
// with a PopulatorWaiting Warning event when the PVC did not say it yet.
func (r *PopulatorReconciler) blockerNote(pvc *corev1.PersistentVolumeClaim, b *blocker) string {
	shown, _, _ := strings.Cut(pvc.Annotations[v1alpha1.AnnMessage], ": ")
	if b == nil {
		r.blocked.news(pvc.UID, "", shown)
		return ""
	}
	if r.blocked.news(pvc.UID, b.reason, shown) {
		r.event(pvc, corev1.EventTypeWarning, v1alpha1.EventPopulatorWaiting, "%s", b)
	}
	return b.String()
}
