package controllers

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The blocker specs play the scheduler, the kubelet, provisioners and the
// quota controller: they set a pending pod's status, write the Warning
// events those components write (naming the object by UID, and forged ones
// naming it by name only), and set a ResourceQuota's status. Each blocker
// is checked on both reconcilers: an image's Ready/Progressing conditions,
// a populated PVC's message annotation, and one event per blocker.

// blockerSide is one reconciler as a user of blockers sees it.
type blockerSide struct {
	name string
	// start makes an attempt whose Job runs: the Job and the claim it
	// writes (the image's PVC, the prime PVC); class is the image PVC's.
	start func(ns string, class *string) (*batchv1.Job, *corev1.PersistentVolumeClaim)
	// shown is what the user reads: "Reason: message".
	shown func(ns string) func() string
	// events counts the events telling of a blocker with reason.
	events func(ns, reason string) func() int32
	// poke makes the reconciler look again now.
	poke func(ns string)
}

var imageSide = blockerSide{
	name: "an image",
	start: func(ns string, class *string) (*batchv1.Job, *corev1.PersistentVolumeClaim) {
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1), Storage: v1alpha1.StorageSpec{StorageClassName: class}})
		job := jobOf(ns, "img")
		EventuallyWithOffset(1, func() string { return getImage(ns, "img").Status.ClaimName }, timeout, interval).ShouldNot(BeEmpty())
		return job, getPVC(ns, getImage(ns, "img").Status.ClaimName)
	},
	shown:  func(ns string) func() string { return readyReason(ns, "img") },
	events: func(ns, reason string) func() int32 { return eventCount(ns, "img", reason) },
	poke:   func(ns string) { poke(&v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "img"}}) },
}

var populationSide = blockerSide{
	name: "a population",
	start: func(ns string, _ *string) (*batchv1.Job, *corev1.PersistentVolumeClaim) {
		readyImage(ns, "img", "12121212", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "vm-disk", "img", storageClass("immediate", false), 2, false)
		return populateJobOf(user), primeOf(user)
	},
	shown: func(ns string) func() string { return annotation(ns, "vm-disk", v1alpha1.AnnMessage) },
	events: func(ns, reason string) func() int32 {
		return notedCount(ns, "vm-disk", v1alpha1.EventPopulatorWaiting, reason+": ")
	},
	poke: func(ns string) {
		poke(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm-disk"}})
	},
}

// poke changes an annotation of obj, which wakes its reconciler.
func poke(obj client.Object) {
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"test.vmdkpop.io/poke":%q}}}`, uuid.NewUUID()))
	ExpectWithOffset(1, k8sClient.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, patch))).To(Succeed())
}

// notedCount counts the events about name with reason whose note starts
// with prefix, repeats in a series included.
func notedCount(ns, name, reason, prefix string) func() int32 {
	return func() int32 {
		list := &eventsv1.EventList{}
		Expect(k8sClient.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
		var n int32
		for _, e := range list.Items {
			switch {
			case e.Regarding.Name != name || e.Reason != reason || !strings.HasPrefix(e.Note, prefix):
			case e.Series != nil:
				n += e.Series.Count
			default:
				n++
			}
		}
		return n
	}
}

// pendingPod makes a pending pod of job with the status the scheduler
// and kubelet would give it.
func pendingPod(job *batchv1.Job, st corev1.PodStatus) *corev1.Pod {
	pod := jobPod(job, corev1.PodPending, nil)
	st.Phase = corev1.PodPending
	pod.Status = st
	ExpectWithOffset(1, k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
	return pod
}

func waiting(reason, msg string) corev1.PodStatus {
	return corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: containerName, Image: "vmdkpop/imager:test",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
}

// scheduledPod is a pod the scheduler bound to node-1, still pending.
func scheduledPod(job *batchv1.Job) *corev1.Pod {
	pod := pendingPod(job, waiting("ContainerCreating", ""))
	ExpectWithOffset(1, k8sClient.SubResource("binding").Create(context.Background(), pod,
		&corev1.Binding{Target: corev1.ObjectReference{Kind: "Node", Name: "node-1"}})).To(Succeed())
	return pod
}

// warn writes a Warning event about obj as a component would: naming its
// UID (uid: obj's; any other for a forged one).
func warn(obj client.Object, kind string, uid types.UID, reason, msg string) {
	now := metav1.Now()
	ExpectWithOffset(1, k8sClient.Create(context.Background(), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: obj.GetNamespace(), GenerateName: obj.GetName() + "-"},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: uid},
		Type:           corev1.EventTypeWarning, Reason: reason, Message: msg,
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		Source: corev1.EventSource{Component: "test"},
	})).To(Succeed())
}

// quota sets a namespace's ResourceQuota on PVCs and its status, as the
// quota controller would have counted.
func quota(ns string, hard, used int64) {
	ctx := context.Background()
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "claims"}}
	hl := corev1.ResourceList{corev1.ResourcePersistentVolumeClaims: *resource.NewQuantity(hard, resource.DecimalSI)}
	_, err := controllerutil.CreateOrUpdate(ctx, k8sClient, q, func() error { q.Spec.Hard = hl; return nil })
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	q.Status = corev1.ResourceQuotaStatus{Hard: hl, Used: corev1.ResourceList{corev1.ResourcePersistentVolumeClaims: *resource.NewQuantity(used, resource.DecimalSI)}}
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, q)).To(Succeed())
}

// shownOnce waits for the blocker to be shown, then makes the reconciler
// look again a few times: the event stays one.
func shownOnce(side blockerSide, ns, reason, text string) {
	EventuallyWithOffset(1, side.shown(ns), timeout, interval).Should(And(HavePrefix(reason+": "), ContainSubstring(text)))
	EventuallyWithOffset(1, side.events(ns, reason), timeout, interval).Should(Equal(int32(1)))
	for range 3 {
		side.poke(ns)
	}
	ConsistentlyWithOffset(1, side.events(ns, reason), "1500ms", interval).Should(Equal(int32(1)))
	ExpectWithOffset(1, side.shown(ns)()).To(And(HavePrefix(reason+": "), ContainSubstring(text)))
}

var _ = Describe("what blocks a wait", func() {
	ctx := context.Background()
	immediate := func() *string { return ptr.To(storageClass("immediate", false)) }

	for _, side := range []blockerSide{imageSide, populationSide} {
		It(side.name+": an unschedulable pod shows the scheduler's message until the pod runs", func() {
			ns := newNamespace()
			job, _ := side.start(ns, immediate())
			pod := pendingPod(job, corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: "0/2 nodes are available: 2 node(s) had volume node affinity conflict."}}})
			shownOnce(side, ns, v1alpha1.ReasonUnschedulable, "volume node affinity conflict")
			if side.name == imageSide.name {
				c := condition(ns, "img", v1alpha1.ConditionProgressing)()
				Expect(c.Status).To(Equal(metav1.ConditionTrue))
				Expect(c.Reason).To(Equal(v1alpha1.ReasonUnschedulable))
				Expect(c.Message).To(ContainSubstring("Job " + job.Name + " is running"))
			}

			// Scheduled and running: nothing blocks any more.
			pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: containerName,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}}
			Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
			side.poke(ns)
			Eventually(side.shown(ns), timeout, interval).ShouldNot(ContainSubstring(v1alpha1.ReasonUnschedulable))
			if side.name == imageSide.name {
				Expect(readyReason(ns, "img")()).To(HavePrefix(v1alpha1.ReasonJobRunning + ": create in progress"))
				Expect(condition(ns, "img", v1alpha1.ConditionProgressing)().Reason).To(Equal(v1alpha1.ReasonJobRunning))
			} else {
				Expect(side.shown(ns)()).To(BeEmpty())
			}
		})

		It(side.name+": an image pull or container creation failure is named with the kubelet's message", func() {
			ns := newNamespace()
			job, _ := side.start(ns, immediate())
			pod := pendingPod(job, waiting("ImagePullBackOff", `Back-off pulling image "vmdkpop/imager:test"`))
			shownOnce(side, ns, v1alpha1.ReasonImagePullFailed, `vmdkpop/imager:test (ImagePullBackOff: Back-off pulling image`)
			pod.Status = waiting("CreateContainerConfigError", `secret "x" not found`)
			pod.Status.Phase = corev1.PodPending
			Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
			shownOnce(side, ns, v1alpha1.ReasonContainerCreateFailed, `CreateContainerConfigError: secret "x" not found`)
		})

		It(side.name+": a mount failure is read from the pod's events by UID, never from a forged one", func() {
			ns := newNamespace()
			job, _ := side.start(ns, immediate())
			pod := scheduledPod(job)
			warn(pod, "Pod", uuid.NewUUID(), "FailedMount", "forged by a tenant")
			side.poke(ns)
			Consistently(side.shown(ns), "1500ms", interval).ShouldNot(Or(ContainSubstring("forged"), HavePrefix(v1alpha1.ReasonMountFailed)))
			warn(pod, "Pod", pod.UID, "FailedMount", `MountVolume.SetUp failed for volume "target": mount failed: exit status 32`)
			shownOnce(side, ns, v1alpha1.ReasonMountFailed, "FailedMount: MountVolume.SetUp failed")
			Expect(side.shown(ns)()).NotTo(ContainSubstring("forged"))
		})

		It(side.name+": pods a quota refuses are named from the Job's events", func() {
			ns := newNamespace()
			job, _ := side.start(ns, immediate())
			warn(job, "Job", job.UID, "FailedCreate", `Error creating: pods "p" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1`)
			shownOnce(side, ns, v1alpha1.ReasonQuotaExceeded, "exceeded quota: pods")
		})

		It(side.name+": a PVC's provisioning failure is read from its events by UID, never from a forged one", func() {
			ns := newNamespace()
			_, claim := side.start(ns, immediate())
			warn(claim, "PersistentVolumeClaim", uuid.NewUUID(), "ProvisioningFailed", "forged by a tenant")
			side.poke(ns)
			Consistently(side.shown(ns), "1500ms", interval).ShouldNot(Or(ContainSubstring("forged"), HavePrefix(v1alpha1.ReasonClaimPending)))
			warn(claim, "PersistentVolumeClaim", claim.UID, "ProvisioningFailed", "the backend is out of space")
			shownOnce(side, ns, v1alpha1.ReasonClaimPending, "PVC "+claim.Name+" is not bound: ProvisioningFailed: the backend is out of space")
		})
	}

	It("an image: a PVC of no class in a cluster without a default class, of the empty class, or of a class that does not exist", func() {
		ns := newNamespace()
		_, claim := imageSide.start(ns, nil)
		shownOnce(imageSide, ns, v1alpha1.ReasonClaimPending, "PVC "+claim.Name+" names no storage class and the cluster has no default StorageClass")

		ns = newNamespace()
		_, claim = imageSide.start(ns, ptr.To("no-such-class"))
		shownOnce(imageSide, ns, v1alpha1.ReasonClaimPending, "PVC "+claim.Name+" names storage class no-such-class, which does not exist")

		ns = newNamespace()
		_, claim = imageSide.start(ns, ptr.To(""))
		shownOnce(imageSide, ns, v1alpha1.ReasonClaimPending, "PVC "+claim.Name+` asks for no storage class (storageClassName ""): nothing provisions a volume for it`)
	})

	It("an image: a PVC a quota refuses is a calm wait, and the image goes on once the quota allows it", func() {
		ns := newNamespace()
		quota(ns, 0, 0)
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1), Storage: v1alpha1.StorageSpec{StorageClassName: immediate()}})
		shownOnce(imageSide, ns, v1alpha1.ReasonQuotaExceeded, "exceeded quota: claims")
		Expect(getImage(ns, "img").Status.Phase).To(Equal(v1alpha1.PhasePending))
		Expect(condition(ns, "img", v1alpha1.ConditionProgressing)().Status).To(Equal(metav1.ConditionFalse))

		quota(ns, 1, 0)
		job := &batchv1.Job{}
		Eventually(func() error {
			return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: getImage(ns, "img").Status.JobName}, job)
		}, quotaRecheck+timeout, interval).Should(Succeed())
		Eventually(readyReason(ns, "img"), timeout, interval).ShouldNot(HavePrefix(v1alpha1.ReasonQuotaExceeded))
	})

	It("a population: a prime PVC a quota refuses is a calm wait", func() {
		ns := newNamespace()
		readyImage(ns, "img", "13131313", v1alpha1.VMDKImageSpec{Size: gi(1)})
		quota(ns, 2, 1) // the image's PVC, and room for the user's
		userPVC(ns, "vm-disk", "img", storageClass("immediate", false), 2, false)
		shownOnce(populationSide, ns, v1alpha1.ReasonQuotaExceeded, "exceeded quota: claims")
		Expect(getPVC(ns, "vm-disk").Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopPending))
	})

	It("a Block population whose device the runtime did not give the pod's user says how to fix the runtime", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "14141414", v1alpha1.VMDKImageSpec{Size: gi(1)})
		denied := &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonTargetNotWritable, Message: "open /dev/vmdkpop-target: permission denied", Permanent: true}
		block := userPVC(ns, "raw", "img", class, 2, true)
		finishJob(populateJobOf(block), jobapi.ExitPermanent, denied)
		Eventually(annotation(ns, "raw", v1alpha1.AnnMessage), timeout, interval).Should(And(
			HavePrefix(jobapi.ReasonTargetNotWritable+": open /dev/vmdkpop-target: permission denied"),
			ContainSubstring("did not give the pod's user the block device"), ContainSubstring("device_ownership_from_security_context")))
		Eventually(eventCount(ns, "raw", v1alpha1.EventPopulatorFailed), timeout, interval).Should(Equal(int32(1)))

		// A Filesystem volume's permissions are no runtime's business.
		fsys := userPVC(ns, "files", "img", class, 2, false)
		finishJob(populateJobOf(fsys), jobapi.ExitPermanent, denied)
		Eventually(annotation(ns, "files", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		Expect(getPVC(ns, "files").Annotations[v1alpha1.AnnMessage]).NotTo(ContainSubstring("device_ownership_from_security_context"))
	})
})
