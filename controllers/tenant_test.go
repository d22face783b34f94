package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A tenant may create PVCs, Jobs and VMDKImages in its own namespace,
// with any names, labels and ownerReferences; these specs play one.

// boundVolume makes a PVC in ns Bound to a new PV of class, as the PV
// controller would: the victim of a takeover.
func boundVolume(ns, name, class string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	ctx := context.Background()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *gi(2)}},
		},
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, pvc)).To(Succeed())
	pv := newPV("pv-"+ns+"-"+name, class, pvc)
	pvc.Spec.VolumeName = pv.Name
	ExpectWithOffset(1, k8sClient.Update(ctx, pvc)).To(Succeed())
	pvc.Status.Phase = corev1.ClaimBound
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, pvc)).To(Succeed())
	return pvc, pv
}

// newPV makes a Bound PV of class whose claimRef names claim, as
// storageClass's provisioner would for claim.
func newPV(name, class string, claim *corev1.PersistentVolumeClaim) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{annProvisionedBy: "example.com/csi"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *gi(2)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/" + name}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID},
		},
	}
	ExpectWithOffset(1, k8sClient.Create(context.Background(), pv)).To(Succeed())
	pv.Status.Phase = corev1.VolumeBound
	ExpectWithOffset(1, k8sClient.Status().Update(context.Background(), pv)).To(Succeed())
	return pv
}

// claimRefOf reads a PV's claimRef UID.
func claimRefOf(pv *corev1.PersistentVolume) func() types.UID {
	return func() types.UID {
		got := &corev1.PersistentVolume{}
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pv), got)).To(Succeed())
		if got.Spec.ClaimRef == nil {
			return ""
		}
		return got.Spec.ClaimRef.UID
	}
}

// forgedJob is a Job a tenant makes under a name the controller derives:
// it claims to be controlled by owner, as the real one would.
func forgedJob(ns, name string, owner client.Object, gvk metav1.GroupVersionKind) *batchv1.Job {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: gvk.Group + "/" + gvk.Version, Kind: gvk.Kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: ptr.To(true),
		}}},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: containerName, Image: "tenant/true"}},
		}}},
	}
	ExpectWithOffset(1, k8sClient.Create(context.Background(), job)).To(Succeed())
	return job
}

// readyReason reads an image's Ready condition as "reason: message".
func readyReason(ns, name string) func() string {
	return func() string {
		c := condition(ns, name, v1alpha1.ConditionReady)()
		if c == nil {
			return ""
		}
		return c.Reason + ": " + c.Message
	}
}

var pvcGVK = metav1.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"}

// untouched asserts obj keeps its UID and resourceVersion for a while.
func untouched(obj client.Object) {
	key, uid, rv := client.ObjectKeyFromObject(obj), obj.GetUID(), obj.GetResourceVersion()
	ConsistentlyWithOffset(1, func() []string {
		got := obj.DeepCopyObject().(client.Object)
		if err := k8sClient.Get(context.Background(), key, got); err != nil {
			return []string{err.Error()}
		}
		return []string{string(got.GetUID()), got.GetResourceVersion()}
	}, 3*time.Second, interval).Should(Equal([]string{string(uid), rv}))
}

var _ = Describe("tenant safety", func() {
	ctx := context.Background()

	It("refuses a forged prime PVC naming another namespace's volume: the victim's PV is never touched", func() {
		class := storageClass("immediate", false)
		victimNS, tenantNS := newNamespace(), newNamespace()
		victim, victimPV := boundVolume(victimNS, "precious", class)

		x := userPVC(tenantNS, "x", "img", class, 2, false)
		prime := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "prime-" + string(x.UID), Labels: map[string]string{v1alpha1.LabelPopulates: string(x.UID)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: x.Name, UID: x.UID, Controller: ptr.To(true)}}},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: x.Spec.AccessModes, StorageClassName: &class, VolumeName: victimPV.Name,
				Resources: x.Spec.Resources,
			},
		}
		Expect(k8sClient.Create(ctx, prime)).To(Succeed())
		prime.Status.Phase = corev1.ClaimBound // the worst case: even Bound
		Expect(k8sClient.Status().Update(ctx, prime)).To(Succeed())
		job := forgedJob(tenantNS, "populate-"+string(x.UID), x, pvcGVK)
		finishJob(job, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30})
		readyImage(tenantNS, "img", "12121212", v1alpha1.VMDKImageSpec{Size: gi(1)})

		Eventually(annotation(tenantNS, "x", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		Expect(getPVC(tenantNS, "x").Annotations[v1alpha1.AnnMessage]).To(And(ContainSubstring("PersistentVolumeClaim "+prime.Name), ContainSubstring("not created by vmdkpop")))
		Eventually(pvcEvents(tenantNS, "x"), timeout, interval).Should(ContainElement(v1alpha1.ReasonForeignObject))
		Consistently(claimRefOf(victimPV), 3*time.Second, interval).Should(Equal(victim.UID))
		untouched(getPVC(tenantNS, prime.Name))
		Expect(getPVC(tenantNS, "x").Annotations).NotTo(HaveKey(v1alpha1.AnnVolume))
	})

	It("refuses a forged populate Job next to a genuine prime, and goes on with a fresh attempt for the retry annotation", func() {
		class := storageClass("immediate", false)
		ns := newNamespace()
		x := userPVC(ns, "x", "img", class, 2, false)
		job := forgedJob(ns, "populate-"+string(x.UID), x, pvcGVK)
		finishJob(job, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30})
		readyImage(ns, "img", "13131313", v1alpha1.VMDKImageSpec{Size: gi(1)})

		prime := primeOf(x)
		// Recorded right after the prime's create: not always seen yet.
		Eventually(annotation(ns, "x", v1alpha1.AnnPrimeUID), timeout, interval).Should(Equal(string(prime.UID)))
		Eventually(annotation(ns, "x", v1alpha1.AnnMessage), timeout, interval).Should(And(ContainSubstring("Job "+job.Name), ContainSubstring("not created by vmdkpop")))
		Expect(getPVC(ns, "x").Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopFailed))
		Eventually(pvcEvents(ns, "x"), timeout, interval).Should(ContainElement(v1alpha1.ReasonForeignObject))
		untouched(job)

		// The tenant removes its Job and asks for a fresh attempt: its
		// Job has a name of its own.
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		setAnnotation(ns, "x", v1alpha1.AnnotationRetry, "squatter-gone")
		Expect(attemptJob(x, 1).Labels[v1alpha1.LabelPopulates]).To(Equal(string(x.UID)))
		Eventually(annotation(ns, "x", v1alpha1.AnnPopulateJobUID), timeout, interval).ShouldNot(BeEmpty())
		Eventually(annotation(ns, "x", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopPopulating))
	})

	It("hands over only a PV whose claimRef names the prime PVC by UID, of the PVC's storage class", func() {
		class := storageClass("immediate", false)
		other := storageClass("other-class", false)
		victimNS, ns := newNamespace(), newNamespace()
		victim, victimPV := boundVolume(victimNS, "precious", class)
		readyImage(ns, "img", "14141414", v1alpha1.VMDKImageSpec{Size: gi(1)})

		// The genuine prime's spec.volumeName set by the tenant to the
		// victim's PV (a PVC's volumeName may be set once).
		x := userPVC(ns, "x", "img", class, 2, false)
		prime := primeOf(x)
		prime.Spec.VolumeName = victimPV.Name
		Expect(k8sClient.Update(ctx, prime)).To(Succeed())
		prime.Status.Phase = corev1.ClaimBound
		Expect(k8sClient.Status().Update(ctx, prime)).To(Succeed())
		finishJob(populateJobOf(x), 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30})
		Eventually(annotation(ns, "x", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("is not bound to prime PVC"))
		Expect(getPVC(ns, "x").Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopFailed))
		Eventually(pvcEvents(ns, "x"), timeout, interval).Should(ContainElement(v1alpha1.ReasonVolumeNotVerified))
		Consistently(claimRefOf(victimPV), 3*time.Second, interval).Should(Equal(victim.UID))

		// A volume of another class, bound to the prime: not the class
		// the user asked for.
		y := userPVC(ns, "y", "img", class, 2, false)
		primeY := primeOf(y)
		pv := newPV("pv-"+ns+"-other", other, primeY)
		primeY.Spec.VolumeName = pv.Name
		Expect(k8sClient.Update(ctx, primeY)).To(Succeed())
		primeY.Status.Phase = corev1.ClaimBound
		Expect(k8sClient.Status().Update(ctx, primeY)).To(Succeed())
		finishJob(populateJobOf(y), 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30})
		Eventually(annotation(ns, "y", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring(`storage class "other-class"`))
		Consistently(claimRefOf(pv), 3*time.Second, interval).Should(Equal(primeY.UID))
	})

	It("never deletes a forged object on cleanup", func() {
		class := storageClass("immediate", false)
		ns := newNamespace()
		x := userPVC(ns, "x", "img", class, 2, false)
		job := forgedJob(ns, "populate-"+string(x.UID), x, pvcGVK)
		readyImage(ns, "img", "15151515", v1alpha1.VMDKImageSpec{Size: gi(1)})
		prime := primeOf(x)
		Eventually(pvcEvents(ns, "x"), timeout, interval).Should(ContainElement(v1alpha1.ReasonForeignObject))
		Expect(k8sClient.Delete(ctx, getPVC(ns, "x"))).To(Succeed())
		Eventually(func() bool {
			p := &corev1.PersistentVolumeClaim{}
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(prime), p)
			return apierrors.IsNotFound(err) || !p.DeletionTimestamp.IsZero()
		}, timeout, interval).Should(BeTrue())
		// envtest runs no garbage collector: only the populator could
		// have deleted the Job.
		got := &batchv1.Job{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), got)).To(Succeed())
		Expect(got.DeletionTimestamp.IsZero()).To(BeTrue())
	})

	It("refuses a forged image PVC and a forged image Job, and ignores forged pods", func() {
		ns := newNamespace()
		child := newImage(ns, "child", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "parent"}})
		claim := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: nameFor(child, "disk")},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *gi(2)}},
			},
		}
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		readyImage(ns, "parent", "16161616", v1alpha1.VMDKImageSpec{Size: gi(1)})

		Eventually(readyReason(ns, "child"), timeout, interval).Should(And(HavePrefix(v1alpha1.ReasonForeignObject+": PersistentVolumeClaim "+claim.Name), ContainSubstring("not created by vmdkpop")))
		Eventually(eventReasons(ns, "child"), timeout, interval).Should(ContainElement(v1alpha1.ReasonForeignObject))
		Expect(getImage(ns, "child").Status.Phase).To(Equal(v1alpha1.PhasePending))
		noJob(ns, "child")
		untouched(getPVC(ns, claim.Name))

		// A forged Job (and a pod of it) once the real PVC exists.
		other := newImage(ns, "other", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "later"}})
		fj := forgedJob(ns, nameFor(other, "create"), other, metav1.GroupVersionKind{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Kind: "VMDKImage"})
		finishJob(fj, 0, succeeded("deadbeef", "ffffffff", "monolithicSparse", 1<<30))
		readyImage(ns, "later", "17171717", v1alpha1.VMDKImageSpec{Size: gi(1)})
		Eventually(readyReason(ns, "other"), timeout, interval).Should(HavePrefix(v1alpha1.ReasonForeignObject + ": Job " + fj.Name))
		Consistently(func() string { return getImage(ns, "other").Status.CID }, 2*time.Second, interval).Should(BeEmpty())
	})

	It("copies onto the user's PVC only the events of its own prime PVC, by UID", func() {
		class := storageClass("immediate", false)
		ns := newNamespace()
		readyImage(ns, "img", "18181818", v1alpha1.VMDKImageSpec{Size: gi(1)})
		x := userPVC(ns, "x", "img", class, 2, false)
		prime := primeOf(x)
		for _, e := range []struct {
			name, reason string
			uid          types.UID
		}{{"forged", "TenantSaysSo", "not-the-prime"}, {"real", "ProvisioningFailed", prime.UID}} {
			Expect(k8sClient.Create(ctx, &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: e.name},
				InvolvedObject: corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: prime.Name, UID: e.uid},
				Type:           corev1.EventTypeWarning, Reason: e.reason, Message: "m", Source: corev1.EventSource{Component: "test"},
			})).To(Succeed())
		}
		pod := jobPod(populateJobOf(x), corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":10,"bytesDone":1,"bytesTotal":10}`)
		Eventually(pvcEvents(ns, "x"), timeout, interval).Should(ContainElement("ProvisioningFailed"))
		Expect(pvcEvents(ns, "x")()).NotTo(ContainElement("TenantSaysSo"))
	})

	It("ignores a dataSourceRef into another namespace", func() {
		// The apiserver takes one only with the alpha
		// CrossNamespaceVolumeDataSource gate (off here): where it is on,
		// the populator must still not fill a PVC from another
		// namespace's image (that needs a ReferenceGrant, unsupported).
		ref := func(ns *string) *corev1.PersistentVolumeClaim {
			return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant"}, Spec: corev1.PersistentVolumeClaimSpec{
				DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptr.To(v1alpha1.GroupVersion.Group), Kind: "VMDKImage", Name: "golden", Namespace: ns},
			}}
		}
		_, ok := dataSourceImage(ref(ptr.To("victim")))
		Expect(ok).To(BeFalse())
		for _, same := range []*string{nil, ptr.To(""), ptr.To("tenant")} {
			name, ok := dataSourceImage(ref(same))
			Expect(ok).To(BeTrue())
			Expect(name).To(Equal("golden"))
		}
	})

	It("bounds the node disk an import may use, and fails an evicted one with the kubelet's reason", func() {
		ns := newNamespace()
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://disks.example/d.vmdk"}}})
		job := jobOf(ns, "img")
		ps := job.Spec.Template.Spec
		var scratch *corev1.Volume
		for i := range ps.Volumes {
			if ps.Volumes[i].Name == "scratch" {
				scratch = &ps.Volumes[i]
			}
		}
		Expect(scratch).NotTo(BeNil())
		Expect(scratch.EmptyDir.SizeLimit.Value()).To(Equal(int64(1<<30 + 1<<30/64 + 64<<20)))
		lim := ps.Containers[0].Resources.Limits[corev1.ResourceEphemeralStorage]
		Expect(lim.Value()).To(Equal(int64(64<<20) + scratch.EmptyDir.SizeLimit.Value()))
		Expect(ps.Containers[0].Resources.Requests).To(HaveKey(corev1.ResourceEphemeralStorage))
		// Disruptions count against the Job's backoff: no Ignore rule.
		for _, rule := range job.Spec.PodFailurePolicy.Rules {
			Expect(rule.Action).NotTo(Equal(batchv1.PodFailurePolicyActionIgnore))
		}

		evictedPod(job, "Pod ephemeral local storage usage exceeds the total limit of containers 1.1Gi.")
		failJob(job, 5)
		Eventually(phaseOfImage(ns, "img"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		c := condition(ns, "img", v1alpha1.ConditionReady)()
		Expect(c.Reason).To(Equal(v1alpha1.ReasonPodEvicted))
		Expect(c.Message).To(ContainSubstring("ephemeral local storage usage exceeds"))
	})

	It("writes no URL secrets into status or events", func() {
		ns := newNamespace()
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://disks.example/d.vmdk?sig=abc"}}})
		finishJob(jobOf(ns, "img"), jobapi.ExitTransient, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonNetworkError,
			Message: `Get "https://alice:hunter2@disks.example/d.vmdk?sig=abc": EOF`})
		// Transient: a retry is scheduled, and every place the failure is
		// told (conditions, lastError) is redacted.
		Eventually(condition(ns, "img", v1alpha1.ConditionProgressing), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonRetryScheduled))
		img := getImage(ns, "img")
		for _, msg := range []string{condition(ns, "img", v1alpha1.ConditionReady)().Message, condition(ns, "img", v1alpha1.ConditionProgressing)().Message, img.Status.LastError} {
			Expect(msg).To(ContainSubstring("disks.example/d.vmdk"))
			Expect(msg).NotTo(Or(ContainSubstring("hunter2"), ContainSubstring("sig=abc")))
		}
	})

	It("does not take the cache's lag for a squatter: a refusal is confirmed live", func() {
		ns := newNamespace()
		img := readyImage(ns, "img", "1a1a1a1a", v1alpha1.VMDKImageSpec{Size: gi(1)})
		// The image as a cache could still hold it: before its PVC's UID
		// was recorded.
		stale := img.DeepCopy()
		delete(stale.Annotations, v1alpha1.AnnClaimUID)
		pvc := &corev1.PersistentVolumeClaim{}
		Expect(getChild(ctx, k8sClient, k8sClient, stale, v1alpha1.AnnClaimUID, img.Status.ClaimName, pvc)).To(Succeed())
		Expect(pvc.UID).To(Equal(types.UID(img.Annotations[v1alpha1.AnnClaimUID])))
		Expect(isForeign(getChild(ctx, k8sClient, nil, stale, v1alpha1.AnnClaimUID, img.Status.ClaimName, pvc))).To(BeTrue())
		// A create that finds the child there already (the cache had not
		// seen it yet) takes it, once the live owner names it.
		child, created, err := ensureChild(ctx, k8sClient, k8sClient, stale, v1alpha1.AnnClaimUID, pvcFor(img, img.Status.ClaimName, 0))
		Expect(err).NotTo(HaveOccurred())
		Expect(created).To(BeFalse())
		Expect(child.UID).To(Equal(pvc.UID))
	})

	It("takes a Job's result only from the pods the Job controls", func() {
		ns := newNamespace()
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1)})
		job := jobOf(ns, "img")
		// A pod a tenant made with the Job's labels (so the manager caches
		// it) and a result of its own.
		b := `{"phase":"Succeeded","reason":"Succeeded","cid":"0badc0de","createType":"monolithicSparse","virtualSize":1073741824}`
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "forged-", Namespace: ns, Labels: podLabels(job)},
			Spec:       *job.Spec.Template.Spec.DeepCopy(),
		}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{Name: containerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: b, FinishedAt: metav1.NewTime(time.Now().Add(time.Hour))}}}}}
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
		finishJob(job, 0, succeeded("600dcafe", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "img"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "img").Status.CID).To(Equal("600dcafe"))
	})
})
