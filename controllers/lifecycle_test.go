package controllers

import (
	"context"
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// jobsOf lists an image's Jobs (its attempts and read-backs).
func jobsOf(ns, name string) []batchv1.Job {
	jobs := &batchv1.JobList{}
	ExpectWithOffset(1, k8sClient.List(context.Background(), jobs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelImage: name})).To(Succeed())
	return jobs.Items
}

// newJobOf waits for a Job of the image not named in seen, and returns it.
func newJobOf(ns, name string, seen ...string) *batchv1.Job {
	var job *batchv1.Job
	EventuallyWithOffset(1, func() bool {
		for _, j := range jobsOf(ns, name) {
			if !containsString(seen, j.Name) {
				job = &j
				return true
			}
		}
		return false
	}, timeout, interval).Should(BeTrue())
	return job
}

func containsString(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// claimOf reads the image's PVC.
func claimOf(ns, name string) *corev1.PersistentVolumeClaim {
	EventuallyWithOffset(1, func() string { return getImage(ns, name).Status.ClaimName }, timeout, interval).ShouldNot(BeEmpty())
	pvc := &corev1.PersistentVolumeClaim{}
	ExpectWithOffset(1, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: getImage(ns, name).Status.ClaimName}, pvc)).To(Succeed())
	return pvc
}

// wipeStatus loses an image's status, as a restore without it would.
func wipeStatus(ns, name string) {
	EventuallyWithOffset(1, func() error {
		img := getImage(ns, name)
		img.Status = v1alpha1.VMDKImageStatus{}
		return k8sClient.Status().Update(context.Background(), img)
	}, timeout, interval).Should(Succeed())
}

// annotateImage sets one annotation on an image.
func annotateImage(ns, name, key, value string) {
	EventuallyWithOffset(1, func() error {
		img := getImage(ns, name)
		if img.Annotations == nil {
			img.Annotations = map[string]string{}
		}
		img.Annotations[key] = value
		return k8sClient.Update(context.Background(), img)
	}, timeout, interval).Should(Succeed())
}

// completeWithoutPod marks a Job complete with no pod left to read.
func completeWithoutPod(job *batchv1.Job) {
	ctx := context.Background()
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
	now := metav1.Now()
	job.Status.StartTime, job.Status.CompletionTime, job.Status.Succeeded = &now, &now, 1
	job.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	Expect(k8sClient.Status().Update(ctx, job)).To(Succeed())
}

var _ = Describe("image lifecycle", func() {
	ctx := context.Background()

	It("records completion on the PVC and rebuilds lost status from it, without running the Job again", func() {
		ns := newNamespace()
		readyImage(ns, "done", "abcd1234", v1alpha1.VMDKImageSpec{Size: gi(1)})
		img := getImage(ns, "done")
		Expect(img.Status.Capacity).To(Equal("1Gi"))
		Expect(img.Status.Allocated).To(Equal("64Ki"))
		rec := &CompletionRecord{}
		Expect(json.Unmarshal([]byte(claimOf(ns, "done").Annotations[v1alpha1.AnnResult]), rec)).To(Succeed())
		Expect(rec.Image).To(Equal(img.UID))
		Expect(rec.Job).To(Equal(img.Status.JobName))
		Expect(rec.Result.CID).To(Equal("abcd1234"))

		// The Job goes (TTL), then status goes: the image is Ready again
		// from its PVC's record, and no Job runs.
		job := jobOf(ns, "done")
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "done")) }, timeout, interval).Should(BeZero())
		wipeStatus(ns, "done")
		Eventually(phaseOfImage(ns, "done"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		img = getImage(ns, "done")
		Expect(img.Status.CID).To(Equal("abcd1234"))
		Expect(img.Status.VirtualSize).To(Equal(int64(1 << 30)))
		Expect(img.Status.JobName).To(Equal(rec.Job))
		noJob(ns, "done")

		// A record for another image (copied onto this PVC) is not taken.
		pvc := claimOf(ns, "done")
		forged := *rec
		forged.Image = "someone-else"
		forged.Result.CID = "66666666"
		b, _ := json.Marshal(forged)
		pvc.Annotations[v1alpha1.AnnResult] = string(b)
		Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
		// The Ready image writes its own record back.
		Eventually(func() string { return claimOf(ns, "done").Annotations[v1alpha1.AnnResult] }, timeout, interval).Should(ContainSubstring("abcd1234"))
	})

	It("never takes a record written for another image", func() {
		ns := newNamespace()
		readyImage(ns, "mine", "abcd1234", v1alpha1.VMDKImageSpec{Size: gi(1)})
		first := jobOf(ns, "mine")
		Expect(k8sClient.Delete(ctx, first, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "mine")) }, timeout, interval).Should(BeZero())
		// While the manager is down (else the Ready image would mend its
		// record at once), a tenant copies another image's record onto
		// this PVC, and the image's status is lost.
		stopManager()
		pvc := claimOf(ns, "mine")
		rec := &CompletionRecord{}
		Expect(json.Unmarshal([]byte(pvc.Annotations[v1alpha1.AnnResult]), rec)).To(Succeed())
		rec.Image, rec.Result.CID = "someone-else", "66666666"
		b, _ := json.Marshal(rec)
		pvc.Annotations[v1alpha1.AnnResult] = string(b)
		Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
		wipeStatus(ns, "mine")
		startManager()
		// With no record of its own, the image runs its Job again.
		job := newJobOf(ns, "mine")
		Expect(getImage(ns, "mine").Status.CID).NotTo(Equal("66666666"))
		finishJob(job, 0, succeeded("abcd5678", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(func() string { return getImage(ns, "mine").Status.CID }, timeout, interval).Should(Equal("abcd5678"))
	})

	It("takes a Failed outcome from the record too: a failed image never re-runs because its Job is gone", func() {
		ns := newNamespace()
		newImage(ns, "bad", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://disks.example/bad.vmdk"}}})
		job := jobOf(ns, "bad")
		finishJob(job, jobapi.ExitPermanent, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonInvalidImage, Message: "not a VMDK", Permanent: true})
		Eventually(phaseOfImage(ns, "bad"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "bad")) }, timeout, interval).Should(BeZero())
		wipeStatus(ns, "bad")
		Eventually(readyReason(ns, "bad"), timeout, interval).Should(HavePrefix(jobapi.ReasonInvalidImage + ":"))
		Expect(getImage(ns, "bad").Status.Phase).To(Equal(v1alpha1.PhaseFailed))
		noJob(ns, "bad")
	})

	It("reads the image back when a succeeded Job's result is gone with its pod", func() {
		ns := newNamespace()
		newImage(ns, "gc", v1alpha1.VMDKImageSpec{Size: gi(2)})
		job := jobOf(ns, "gc")
		completeWithoutPod(job)
		Eventually(condition(ns, "gc", v1alpha1.ConditionProgressing), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonReadingResult))
		Expect(getImage(ns, "gc").Status.Phase).NotTo(Equal(v1alpha1.PhaseFailed))
		info := newJobOf(ns, "gc", job.Name)
		Expect(info.Spec.Template.Spec.Containers[0].Args[0]).To(Equal("info"))
		finishJob(info, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, CID: "0badcafe", ParentCID: "ffffffff",
			CreateType: "monolithicSparse", VirtualSize: 2 << 30, AllocatedBytes: 12288})
		Eventually(phaseOfImage(ns, "gc"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		img := getImage(ns, "gc")
		Expect(img.Status.CID).To(Equal("0badcafe"))
		Expect(img.Status.Allocated).To(Equal("12Ki"))
		Expect(img.Status.Capacity).To(Equal("2Gi"))
		Expect(img.Status.JobName).To(Equal(job.Name))
	})

	It("retries transient failures with fresh Jobs after a backoff, up to the cap, then re-runs on the retry annotation", func() {
		ns := newNamespace()
		newImage(ns, "flaky", v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "uploads", Path: "vms/disk.vmdk"}},
			Storage: v1alpha1.StorageSpec{Size: gi(2)},
		})
		var seen []string
		fail := func(msg string) *batchv1.Job {
			job := newJobOf(ns, "flaky", seen...)
			seen = append(seen, job.Name)
			finishJob(job, jobapi.ExitTransient, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonNetworkError, Message: msg})
			return job
		}
		first := fail("connection reset")
		Eventually(condition(ns, "flaky", v1alpha1.ConditionProgressing), timeout, interval).Should(
			And(HaveField("Reason", v1alpha1.ReasonRetryScheduled), HaveField("Message", ContainSubstring("retry 1 of 2"))))
		img := getImage(ns, "flaky")
		Expect(img.Status.Phase).To(Equal(v1alpha1.PhaseImporting))
		Expect(img.Status.LastError).To(ContainSubstring("connection reset"))
		Expect(readyReason(ns, "flaky")()).To(HavePrefix(jobapi.ReasonNetworkError + ":"))

		// The backoff: no new Job for a moment, then one with a new name.
		Consistently(func() int { return len(jobsOf(ns, "flaky")) }, 500*time.Millisecond, interval).Should(Equal(1))
		second := fail("connection reset again")
		Expect(second.Name).NotTo(Equal(first.Name))
		Expect(getImage(ns, "flaky").Status.Retries).To(Equal(int32(1)))
		fail("timeout")
		Eventually(phaseOfImage(ns, "flaky"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		img = getImage(ns, "flaky")
		Expect(img.Status.Retries).To(Equal(int32(2)))
		Expect(readyReason(ns, "flaky")()).To(HavePrefix(jobapi.ReasonNetworkError + ":"))
		Expect(condition(ns, "flaky", v1alpha1.ConditionReady)().Message).To(ContainSubstring("no retries left"))
		Consistently(func() int { return len(jobsOf(ns, "flaky")) }, 5*time.Second, 250*time.Millisecond).Should(Equal(3))
		Expect(eventReasons(ns, "flaky")()).To(ContainElements(v1alpha1.EventAttemptFailed, v1alpha1.EventRetrying, v1alpha1.EventFailed))

		// The source is fixed: the user asks for a fresh attempt.
		annotateImage(ns, "flaky", v1alpha1.AnnotationRetry, "fixed-source")
		fresh := newJobOf(ns, "flaky", seen...)
		Eventually(func() string { return getImage(ns, "flaky").Status.Retried }, timeout, interval).Should(Equal("fixed-source"))
		Expect(getImage(ns, "flaky").Status.Retries).To(BeZero())
		finishJob(fresh, 0, succeeded("5eed5eed", "ffffffff", "monolithicSparse", 2<<30))
		Eventually(phaseOfImage(ns, "flaky"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "flaky").Status.JobName).To(Equal(fresh.Name))
		Expect(getImage(ns, "flaky").Status.LastError).To(BeEmpty())

		// The same token again starts nothing.
		annotateImage(ns, "flaky", v1alpha1.AnnotationRetry, "fixed-source")
		Consistently(func() int { return len(jobsOf(ns, "flaky")) }, 2*time.Second, interval).Should(Equal(4))
	})

	It("acknowledges a retry token on a running image and starts nothing; trusts no record over a live Job", func() {
		ns := newNamespace()
		newImage(ns, "busy", v1alpha1.VMDKImageSpec{Size: gi(1)})
		job := jobOf(ns, "busy")
		annotateImage(ns, "busy", v1alpha1.AnnotationRetry, "impatient")
		Eventually(func() string { return getImage(ns, "busy").Status.Retried }, timeout, interval).Should(Equal("impatient"))
		Eventually(eventReasons(ns, "busy"), timeout, interval).Should(ContainElement(v1alpha1.EventRetryIgnored))
		Consistently(func() int { return len(jobsOf(ns, "busy")) }, 2*time.Second, interval).Should(Equal(1))

		// A record naming the running Job is written on the PVC: the
		// Job, still running, decides; the record is not taken.
		pvc := claimOf(ns, "busy")
		if pvc.Annotations == nil {
			pvc.Annotations = map[string]string{}
		}
		b, _ := json.Marshal(&CompletionRecord{Image: getImage(ns, "busy").UID, Job: job.Name,
			Result: *succeeded("f0f0f0f0", "ffffffff", "monolithicSparse", 1<<30)})
		pvc.Annotations[v1alpha1.AnnResult] = string(b)
		Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
		Consistently(phaseOfImage(ns, "busy"), 2*time.Second, interval).Should(Equal(v1alpha1.PhaseCreating))
		finishJob(job, 0, succeeded("0e0e0e0e", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(func() string { return getImage(ns, "busy").Status.CID }, timeout, interval).Should(Equal("0e0e0e0e"))
		Expect(len(jobsOf(ns, "busy"))).To(Equal(1))
	})

	It("never makes a lost Job again: reads the image back, or moves to the next attempt", func() {
		ns := newNamespace()
		// Deleted mid-way, the image made: read back, Ready.
		newImage(ns, "gone", v1alpha1.VMDKImageSpec{Size: gi(1)})
		job := jobOf(ns, "gone")
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		info := newJobOf(ns, "gone", job.Name)
		Expect(info.Spec.Template.Spec.Containers[0].Args[0]).To(Equal("info"))
		finishJob(info, 0, succeeded("1e1e1e1e", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "gone"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "gone").Status.CID).To(Equal("1e1e1e1e"))
		Expect(getImage(ns, "gone").Status.JobName).To(Equal(job.Name))

		// A failed attempt's Job deleted during the backoff: the image is
		// not in the PVC, so the next attempt starts, counted.
		newImage(ns, "flap", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://disks.example/d.vmdk"}}})
		first := jobOf(ns, "flap")
		finishJob(first, jobapi.ExitTransient, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonNetworkError, Message: "reset"})
		Eventually(condition(ns, "flap", v1alpha1.ConditionProgressing), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonRetryScheduled))
		Expect(k8sClient.Delete(ctx, first, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int32 { return getImage(ns, "flap").Status.Attempt }, timeout, interval).Should(Equal(int32(1)))
		second := newJobOf(ns, "flap", first.Name)
		Expect(second.Spec.Template.Spec.Containers[0].Args[0]).To(Equal("import"))
		Expect(second.Annotations["storage.vmdkpop.io/attempt"]).To(Equal("1"))
		// Its status lost mid-attempt, the image finds its attempt again
		// from the Job it recorded: no new Job, no refusal.
		wipeStatus(ns, "flap")
		Eventually(func() int32 { return getImage(ns, "flap").Status.Attempt }, timeout, interval).Should(Equal(int32(1)))
		Expect(getImage(ns, "flap").Status.JobName).To(Equal(second.Name))
		Consistently(func() int { return len(jobsOf(ns, "flap")) }, 2*time.Second, interval).Should(Equal(1))
		finishJob(second, 0, succeeded("2e2e2e2e", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "flap"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
	})

	It("does not retry a permanent failure or an eviction for outgrowing its own limits", func() {
		ns := newNamespace()
		newImage(ns, "evicted", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://disks.example/d.vmdk"}}})
		job := jobOf(ns, "evicted")
		evictedPod(job, "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Gi\".")
		failJob(job, 5)
		Eventually(phaseOfImage(ns, "evicted"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		Expect(readyReason(ns, "evicted")()).To(HavePrefix(v1alpha1.ReasonPodEvicted + ":"))
		Consistently(func() int { return len(jobsOf(ns, "evicted")) }, 3*time.Second, interval).Should(Equal(1))
	})

	It("reports a resize the storage class cannot do, without re-running anything, and follows one it can", func() {
		ns := newNamespace()
		fixed := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fixed-" + ns}, Provisioner: "example.com/csi"}
		Expect(k8sClient.Create(ctx, fixed)).To(Succeed())
		readyImage(ns, "rigid", "11112222", v1alpha1.VMDKImageSpec{Size: gi(1), Storage: v1alpha1.StorageSpec{Size: gi(2), StorageClassName: &fixed.Name}})
		bindClaim(ns, "rigid", gi(2))
		Eventually(condition(ns, "rigid", v1alpha1.ConditionStorage), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonResized))
		job := jobOf(ns, "rigid")
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "rigid")) }, timeout, interval).Should(BeZero())

		growStorage(ns, "rigid", gi(4))
		Eventually(condition(ns, "rigid", v1alpha1.ConditionStorage), timeout, interval).Should(
			And(HaveField("Reason", v1alpha1.ReasonExpansionUnsupported), HaveField("Message", ContainSubstring("storageclass"))))
		img := getImage(ns, "rigid")
		Expect(img.Status.ObservedGeneration).To(Equal(img.Generation))
		Expect(img.Status.Phase).To(Equal(v1alpha1.PhaseReady))
		noJob(ns, "rigid")
		warnings := 0
		for _, r := range eventReasons(ns, "rigid")() {
			if r == v1alpha1.ReasonExpansionUnsupported {
				warnings++
			}
		}
		Expect(warnings).To(Equal(1))

		// A class that expands: the request grows, and the condition
		// follows the PVC's own conditions to the end.
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "grows-" + ns}, Provisioner: "example.com/csi", AllowVolumeExpansion: ptr.To(true)}
		Expect(k8sClient.Create(ctx, sc)).To(Succeed())
		readyImage(ns, "elastic", "33334444", v1alpha1.VMDKImageSpec{Size: gi(1), Storage: v1alpha1.StorageSpec{Size: gi(2), StorageClassName: &sc.Name}})
		bindClaim(ns, "elastic", gi(2))
		growStorage(ns, "elastic", gi(3))
		Eventually(condition(ns, "elastic", v1alpha1.ConditionStorage), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonResizing))
		Expect(claimOf(ns, "elastic").Spec.Resources.Requests.Storage().Value()).To(Equal(int64(3 << 30)))
		setClaimConditions(ns, "elastic", nil, corev1.PersistentVolumeClaimCondition{Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue})
		Eventually(condition(ns, "elastic", v1alpha1.ConditionStorage), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonFileSystemResizePending))
		setClaimConditions(ns, "elastic", nil, corev1.PersistentVolumeClaimCondition{Type: corev1.PersistentVolumeClaimNodeResizeError, Status: corev1.ConditionTrue, Message: "resize2fs: no space"})
		Eventually(condition(ns, "elastic", v1alpha1.ConditionStorage), timeout, interval).Should(
			And(HaveField("Reason", v1alpha1.ReasonResizeFailed), HaveField("Message", ContainSubstring("resize2fs"))))
		setClaimConditions(ns, "elastic", gi(3))
		Eventually(condition(ns, "elastic", v1alpha1.ConditionStorage), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonResized))
		Expect(len(jobsOf(ns, "elastic"))).To(Equal(1))

		// A quota on storage refuses the next growth: said so, and tried
		// again once the quota is raised.
		storageQuota := func(hard int64) {
			q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "storage"}}
			hl := corev1.ResourceList{corev1.ResourceRequestsStorage: *gi(hard)}
			_, err := controllerutil.CreateOrUpdate(ctx, k8sClient, q, func() error { q.Spec.Hard = hl; return nil })
			Expect(err).NotTo(HaveOccurred())
			q.Status = corev1.ResourceQuotaStatus{Hard: hl, Used: corev1.ResourceList{corev1.ResourceRequestsStorage: *gi(5)}}
			Expect(k8sClient.Status().Update(ctx, q)).To(Succeed())
		}
		storageQuota(5)
		growStorage(ns, "elastic", gi(4))
		Eventually(condition(ns, "elastic", v1alpha1.ConditionStorage), timeout, interval).Should(
			And(HaveField("Reason", v1alpha1.ReasonQuotaExceeded), HaveField("Message", ContainSubstring("exceeded quota"))))
		storageQuota(50)
		Eventually(func() int64 { return claimOf(ns, "elastic").Spec.Resources.Requests.Storage().Value() }, 30*time.Second, interval).Should(Equal(int64(4 << 30)))
	})

	It("notices a Ready image's PVC gone or Lost, and makes the image again when asked", func() {
		ns := newNamespace()
		readyImage(ns, "lost", "aaaa0000", v1alpha1.VMDKImageSpec{Size: gi(1)})
		first := jobOf(ns, "lost")
		pvc := claimOf(ns, "lost")
		pvc.Status.Phase = corev1.ClaimLost
		Expect(k8sClient.Status().Update(ctx, pvc)).To(Succeed())
		Eventually(readyReason(ns, "lost"), timeout, interval).Should(HavePrefix(v1alpha1.ReasonClaimLost + ":"))
		Expect(getImage(ns, "lost").Status.Phase).To(Equal(v1alpha1.PhaseFailed))
		Eventually(eventReasons(ns, "lost"), timeout, interval).Should(ContainElement(v1alpha1.ReasonClaimLost))

		annotateImage(ns, "lost", v1alpha1.AnnotationRetry, "1")
		// The Lost PVC is deleted, and once the pvc-protection controller
		// (the test plays it) lets it go, a new one is made and a fresh
		// Job writes it.
		Eventually(func() bool { return !claimOf(ns, "lost").DeletionTimestamp.IsZero() }, timeout, interval).Should(BeTrue())
		Expect(getImage(ns, "lost").Status.Phase).NotTo(Equal(v1alpha1.PhaseReady))
		Eventually(func() error {
			old := claimOf(ns, "lost")
			old.Finalizers = nil
			return k8sClient.Update(ctx, old)
		}, timeout, interval).Should(Succeed())
		Eventually(func() types.UID { return claimOf(ns, "lost").UID }, timeout, interval).ShouldNot(Equal(pvc.UID))
		job := newJobOf(ns, "lost", first.Name)
		finishJob(job, 0, succeeded("aaaa1111", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "lost"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "lost").Status.CID).To(Equal("aaaa1111"))

		// Gone altogether.
		gone := claimOf(ns, "lost")
		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		Eventually(readyReason(ns, "lost"), timeout, interval).Should(HavePrefix(v1alpha1.ReasonClaimLost + ":"))
	})

	It("fails a backing loop and lets its images be deleted; refuses a self-reference", func() {
		ns := newNamespace()
		newImage(ns, "a", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "b"}})
		newImage(ns, "b", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "a"}})
		for _, name := range []string{"a", "b"} {
			Eventually(readyReason(ns, name), timeout, interval).Should(HavePrefix(v1alpha1.ReasonDependencyFailed + ":"))
			Expect(condition(ns, name, v1alpha1.ConditionReady)().Message).To(ContainSubstring("loop"))
		}
		// Deleted together (as a namespace deletion does): neither waits
		// for the other forever.
		for _, name := range []string{"a", "b"} {
			Expect(k8sClient.Delete(ctx, getImage(ns, name))).To(Succeed())
		}
		for _, name := range []string{"a", "b"} {
			Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &v1alpha1.VMDKImage{}))
			}, timeout, interval).Should(BeTrue())
		}
		self := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "self"},
			Spec: v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "self"}}}
		Expect(errString(k8sClient.Create(ctx, self))).To(ContainSubstring("cannot be its own backing image"))
		self.Spec = v1alpha1.VMDKImageSpec{Source: &v1alpha1.ImageSource{Image: &v1alpha1.ImageReference{Name: "self"}}}
		Expect(errString(k8sClient.Create(ctx, self))).To(ContainSubstring("cannot flatten itself"))
	})
})

// evictedPod makes a pod of the Job that the kubelet evicted with msg,
// before its container ran.
func evictedPod(job *batchv1.Job, msg string) {
	pod := jobPod(job, corev1.PodFailed, nil)
	pod.Status.Reason, pod.Status.Message = "Evicted", msg
	pod.Status.ContainerStatuses = nil
	ExpectWithOffset(1, k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
}

// failJob marks a Job failed by its backoff limit after failed pods (its
// pods are the caller's).
func failJob(job *batchv1.Job, failed int32) {
	ctx := context.Background()
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
	now := metav1.Now()
	job.Status.StartTime, job.Status.Failed = &now, failed
	job.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "BackoffLimitExceeded"},
		{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"},
	}
	Expect(k8sClient.Status().Update(ctx, job)).To(Succeed())
}

// growStorage sets an image's spec.storage.size.
func growStorage(ns, name string, size *resource.Quantity) {
	EventuallyWithOffset(1, func() error {
		img := getImage(ns, name)
		img.Spec.Storage.Size = size
		return k8sClient.Update(context.Background(), img)
	}, timeout, interval).Should(Succeed())
}

// bindClaim binds the image's PVC with the given capacity, as a
// provisioner would.
func bindClaim(ns, name string, capacity *resource.Quantity) {
	setClaimConditions(ns, name, capacity)
}

// setClaimConditions sets the image PVC's status: Bound, with capacity
// (if not nil) and exactly these conditions.
func setClaimConditions(ns, name string, capacity *resource.Quantity, conds ...corev1.PersistentVolumeClaimCondition) {
	EventuallyWithOffset(1, func() error {
		pvc := claimOf(ns, name)
		pvc.Status.Phase = corev1.ClaimBound
		if capacity != nil {
			pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: *capacity}
		}
		pvc.Status.Conditions = conds
		return k8sClient.Status().Update(context.Background(), pvc)
	}, timeout, interval).Should(Succeed())
}
