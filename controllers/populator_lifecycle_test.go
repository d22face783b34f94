package controllers

import (
	"context"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The populator's lifecycle: attempts, retries, a lost prime PVC, and
// every order of deletion. The suite's RetryPolicy (managerConfig) is 2
// retries, seconds apart.

// attemptName is the name of attempt n's prime PVC or Job.
func attemptName(user *corev1.PersistentVolumeClaim, kind string, n int) string {
	name := kind + "-" + string(user.UID)
	if n > 0 {
		name += "-" + strconv.Itoa(n)
	}
	return name
}

// attemptJob waits for attempt n's Job.
func attemptJob(user *corev1.PersistentVolumeClaim, n int) *batchv1.Job {
	job := &batchv1.Job{}
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(context.Background(), types.NamespacedName{Namespace: user.Namespace, Name: attemptName(user, "populate", n)}, job)
	}, timeout, interval).Should(Succeed())
	return job
}

// attemptPrime waits for attempt n's prime PVC.
func attemptPrime(user *corev1.PersistentVolumeClaim, n int) *corev1.PersistentVolumeClaim {
	prime := &corev1.PersistentVolumeClaim{}
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(context.Background(), types.NamespacedName{Namespace: user.Namespace, Name: attemptName(user, "prime", n)}, prime)
	}, timeout, interval).Should(Succeed())
	return prime
}

// bindPrime plays the provisioner: a new PV (reclaim policy Retain)
// bound to the prime PVC.
func bindPrime(prime *corev1.PersistentVolumeClaim, class string) *corev1.PersistentVolume {
	ctx := context.Background()
	pv := newPV("pv-"+prime.Namespace+"-"+prime.Name[len(prime.Name)-8:], class, prime)
	EventuallyWithOffset(1, func() error {
		p := getPVC(prime.Namespace, prime.Name)
		p.Spec.VolumeName = pv.Name
		if err := k8sClient.Update(ctx, p); err != nil {
			return err
		}
		p.Status.Phase = corev1.ClaimBound
		return k8sClient.Status().Update(ctx, p)
	}, timeout, interval).Should(Succeed())
	return pv
}

// bindUser plays the PV controller binding the user's PVC to the volume
// handed to it.
func bindUser(ns, name, pv string) {
	ctx := context.Background()
	EventuallyWithOffset(1, func() error {
		u := getPVC(ns, name)
		u.Spec.VolumeName = pv
		return k8sClient.Update(ctx, u)
	}, timeout, interval).Should(Succeed())
	u := getPVC(ns, name)
	u.Status.Phase = corev1.ClaimBound
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, u)).To(Succeed())
}

func reclaimPolicy(pv *corev1.PersistentVolume) func() corev1.PersistentVolumeReclaimPolicy {
	return func() corev1.PersistentVolumeReclaimPolicy {
		got := &corev1.PersistentVolume{}
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pv), got)).To(Succeed())
		return got.Spec.PersistentVolumeReclaimPolicy
	}
}

func gone(obj client.Object) func() bool {
	return func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)))
	}
}

// goneOrDeleting: a PVC keeps kubernetes.io/pvc-protection in envtest
// (no controller removes it).
func goneOrDeleting(pvc *corev1.PersistentVolumeClaim) func() bool {
	return func() bool {
		p := &corev1.PersistentVolumeClaim{}
		err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pvc), p)
		return apierrors.IsNotFound(err) || !p.DeletionTimestamp.IsZero()
	}
}

// populateJobs lists the user PVC's Jobs.
func populateJobs(user *corev1.PersistentVolumeClaim) func() []string {
	return func() []string {
		list := &batchv1.JobList{}
		Expect(k8sClient.List(context.Background(), list, client.InNamespace(user.Namespace), client.MatchingLabels{v1alpha1.LabelPopulates: string(user.UID)})).To(Succeed())
		var out []string
		for _, j := range list.Items {
			out = append(out, j.Name)
		}
		return out
	}
}

// eventCount counts the events of a reason about an object, repeats in a
// series included (the recorder folds identical events into one).
func eventCount(ns, name, reason string) func() int32 {
	return func() int32 {
		list := &eventsv1.EventList{}
		Expect(k8sClient.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
		var n int32
		for _, e := range list.Items {
			if e.Regarding.Name != name || e.Reason != reason {
				continue
			}
			if e.Series != nil {
				n += e.Series.Count
			} else {
				n++
			}
		}
		return n
	}
}

func annotationTime(ns, name, key string) time.Time {
	t, err := time.Parse(time.RFC3339, getPVC(ns, name).Annotations[key])
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return t
}

func getImageErr(ns, name string) (*v1alpha1.VMDKImage, error) {
	img := &v1alpha1.VMDKImage{}
	return img, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, img)
}

func transient(msg string) *jobapi.Result {
	return &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonIOError, Message: msg}
}

func permanent(msg string) *jobapi.Result {
	return &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonInvalidImage, Message: msg, Permanent: true}
}

func setAnnotation(ns, name, key, value string) {
	EventuallyWithOffset(1, func() error {
		p := getPVC(ns, name)
		p.Annotations[key] = value
		return k8sClient.Update(context.Background(), p)
	}, timeout, interval).Should(Succeed())
}

var _ = Describe("populator lifecycle", func() {
	ctx := context.Background()

	It("starts over with a new prime PVC and Job when the prime is deleted mid-way, never handing over from the old Job", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "a1a1a1a1", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime0, job0 := primeOf(user), populateJobOf(user)
		Expect(job0.Labels[v1alpha1.LabelPrime]).To(Equal(string(prime0.UID)))
		// The old Job finished, its prime not yet bound: the populator
		// waits for the volume.
		finishJob(job0, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30, TargetFormat: "raw"})
		Expect(k8sClient.Delete(ctx, prime0)).To(Succeed())

		Eventually(annotation(ns, "d", v1alpha1.AnnPopAttempt), timeout, interval).Should(Equal("1"))
		Eventually(eventCount(ns, "d", v1alpha1.EventPopulatorRestarted), timeout, interval).Should(BeNumerically("==", 1))
		Eventually(gone(job0), timeout, interval).Should(BeTrue())
		prime1, job1 := attemptPrime(user, 1), attemptJob(user, 1)
		Expect(job1.Labels[v1alpha1.LabelPrime]).To(Equal(string(prime1.UID)))
		Expect(job1.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.PersistentVolumeClaim.ClaimName", prime1.Name)))

		// The new prime is bound; its Job still runs: nothing is handed over.
		pv := bindPrime(prime1, class)
		Consistently(claimRefOf(pv), 2*time.Second, interval).Should(Equal(prime1.UID))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnVolume))
		finishJob(job1, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30, TargetFormat: "raw"})
		Eventually(claimRefOf(pv), timeout, interval).Should(Equal(user.UID))
		Expect(populateJobs(user)()).To(ConsistOf(job1.Name))

		// Bound: the prime and Job are cleaned up, and the PV, the
		// user's now, keeps its Retain policy.
		bindUser(ns, "d", pv.Name)
		Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopSucceeded))
		Eventually(goneOrDeleting(prime1), timeout, interval).Should(BeTrue())
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimRetain))
	})

	It("uses a Job only with the prime PVC it was made for", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "b2b2b2b2", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		job0 := populateJobOf(user)
		// The recorded Job, relabelled as another prime's: what it
		// writes is not taken for this prime's content.
		Eventually(func() error {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job0), job0)).To(Succeed())
			job0.Labels[v1alpha1.LabelPrime] = "another-prime"
			return k8sClient.Update(ctx, job0)
		}, timeout, interval).Should(Succeed())
		Eventually(annotation(ns, "d", v1alpha1.AnnPopAttempt), timeout, interval).Should(Equal("1"))
		Eventually(gone(job0), timeout, interval).Should(BeTrue())
		Expect(attemptJob(user, 1).Labels[v1alpha1.LabelPrime]).To(Equal(string(attemptPrime(user, 1).UID)))
	})

	It("keeps a failed attempt and its retry's time across a manager restart", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "b3b3b3b3", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		finishJob(populateJobOf(user), 1, transient("EIO"))
		Eventually(annotation(ns, "d", v1alpha1.AnnPopRetryAt), timeout, interval).ShouldNot(BeEmpty())
		retryAt := annotationTime(ns, "d", v1alpha1.AnnPopRetryAt)
		stopManager()
		startManager()
		job := attemptJob(user, 1)
		Expect(job.CreationTimestamp.Time).NotTo(BeTemporally("<", retryAt))
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnPopRetries]).To(Equal("1"))
		Consistently(eventCount(ns, "d", v1alpha1.EventPopulatorFailed), time.Second, interval).Should(BeNumerically("==", 1))
		Expect(populateJobs(user)()).To(ConsistOf(job.Name))
	})

	It("reclaims the Retain volume of a prime PVC already gone when the populator sees it", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "b1b1b1b1", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime0 := primeOf(user)
		populateJobOf(user)
		pv := bindPrime(prime0, class)
		Expect(k8sClient.Delete(ctx, prime0)).To(Succeed())
		Eventually(func() error { // gone at once: no pvc-protection left
			p := &corev1.PersistentVolumeClaim{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(prime0), p); err != nil {
				return client.IgnoreNotFound(err)
			}
			p.Finalizers = nil
			return k8sClient.Update(ctx, p)
		}, timeout, interval).Should(Succeed())
		Eventually(gone(prime0), timeout, interval).Should(BeTrue())
		Eventually(annotation(ns, "d", v1alpha1.AnnPopAttempt), timeout, interval).Should(Equal("1"))
		Eventually(reclaimPolicy(pv), timeout, interval).Should(Equal(corev1.PersistentVolumeReclaimDelete))
		attemptJob(user, 1)
	})

	It("never runs a failed Job again once the TTL removed it, and reports PopulatorFailed once: permanent failures are not retried", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "a2a2a2a2", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		job := populateJobOf(user)
		finishJob(job, jobapi.ExitPermanent, permanent("the grain directory is corrupt"))
		Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		msg := getPVC(ns, "d").Annotations[v1alpha1.AnnMessage]
		Expect(msg).To(And(HavePrefix("InvalidImage: the grain directory is corrupt"), ContainSubstring("not retried (permanent)"), ContainSubstring(v1alpha1.AnnotationRetry)))
		Expect(getPVC(ns, "d").Annotations).To(And(HaveKey(v1alpha1.AnnPopFailedAt), Not(HaveKey(v1alpha1.AnnPopRetryAt))))
		Eventually(eventCount(ns, "d", v1alpha1.EventPopulatorFailed), timeout, interval).Should(BeNumerically("==", 1))

		// The TTL controller deletes the finished Job.
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy("Background"))).To(Succeed())
		Consistently(populateJobs(user), 3*time.Second, interval).Should(BeEmpty())
		Expect(eventCount(ns, "d", v1alpha1.EventPopulatorFailed)()).To(BeNumerically("==", 1))
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnMessage]).To(Equal(msg))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPopAttempt))
	})

	It("does not retry a population whose pod was evicted for outgrowing its own limits", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "b4b4b4b4", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		job := populateJobOf(user)
		pod := jobPod(job, corev1.PodFailed, nil)
		pod.Status.Reason, pod.Status.Message = "Evicted", "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi."
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
		failJob(job, 1)
		Eventually(annotation(ns, "d", v1alpha1.AnnMessage), timeout, interval).Should(And(HavePrefix(v1alpha1.ReasonPodEvicted+": "), ContainSubstring("not retried (permanent)")))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPopRetryAt))
	})

	It("retries transient failures with a fresh Job after the backoff, up to the retry limit", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "a3a3a3a3", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime0 := primeOf(user)
		finishJob(populateJobOf(user), 1, transient("EIO reading the volume"))

		for n := 1; n <= 2; n++ {
			Eventually(annotation(ns, "d", v1alpha1.AnnPopRetryAt), timeout, interval).ShouldNot(BeEmpty())
			failedAt, retryAt := annotationTime(ns, "d", v1alpha1.AnnPopFailedAt), annotationTime(ns, "d", v1alpha1.AnnPopRetryAt)
			Expect(retryAt.Sub(failedAt)).To(BeNumerically(">=", managerConfig.Imager.Retry.Delay(int32(n))), "retry %d waits the policy's delay", n)
			Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnMessage]).To(And(HavePrefix("IOError: EIO reading the volume"), ContainSubstring("retry "+strconv.Itoa(n)+" of 2")))
			Eventually(eventCount(ns, "d", v1alpha1.EventPopulatorFailed), timeout, interval).Should(BeNumerically("==", n))

			job := attemptJob(user, n)
			Expect(job.CreationTimestamp.Time).NotTo(BeTemporally("<", retryAt), "retry %d started before it was due", n)
			Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnPopRetries]).To(Equal(strconv.Itoa(n)))
			Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopPopulating))
			Expect(populateJobs(user)()).To(ConsistOf(job.Name), "the failed attempt's Job is deleted")
			finishJob(job, 1, transient("EIO reading the volume"))
		}
		Eventually(goneOrDeleting(prime0), timeout, interval).Should(BeTrue())

		// The limit reached: failed for good, no further Job.
		Eventually(annotation(ns, "d", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("not retried: 2 retries made"))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPopRetryAt))
		Consistently(func() error {
			return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: attemptName(user, "populate", 3)}, &batchv1.Job{})
		}, 5*time.Second, interval).ShouldNot(Succeed())
		Expect(eventCount(ns, "d", v1alpha1.EventPopulatorFailed)()).To(BeNumerically("==", 3))
	})

	It("starts a fresh attempt for the retry annotation, reclaiming the failed attempt's Retain volume", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "a4a4a4a4", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime0, job0 := primeOf(user), populateJobOf(user)
		pv := bindPrime(prime0, class)
		finishJob(job0, jobapi.ExitPermanent, permanent("bad descriptor"))
		Eventually(annotation(ns, "d", v1alpha1.AnnPopFailedAt), timeout, interval).ShouldNot(BeEmpty())
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimRetain), "kept while the failed attempt's prime is")

		setAnnotation(ns, "d", v1alpha1.AnnotationRetry, "fixed-1")
		Eventually(annotation(ns, "d", v1alpha1.AnnPopRetried), timeout, interval).Should(Equal("fixed-1"))
		job1 := attemptJob(user, 1)
		Expect(job1.Name).NotTo(Equal(job0.Name))
		Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopPopulating))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPopFailedAt))
		Eventually(eventCount(ns, "d", v1alpha1.EventPopulatorRetrying), timeout, interval).Should(BeNumerically("==", 1))
		Eventually(gone(job0), timeout, interval).Should(BeTrue())
		Eventually(goneOrDeleting(prime0), timeout, interval).Should(BeTrue())
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimDelete), "the old prime's PV goes with it")

		// A controller retry after the user's starts from 0 retries, and
		// the same token asks for nothing more.
		finishJob(job1, 1, transient("EIO"))
		Eventually(annotation(ns, "d", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("retry 1 of 2"))
		attemptJob(user, 2)
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnPopRetried]).To(Equal("fixed-1"))
	})

	It("makes the image and its chain wait for deletion while a population reads them", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "base", "a5a5a5a5", v1alpha1.VMDKImageSpec{Size: gi(1)})
		readyImage(ns, "top", "a6a6a6a6", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "base"}})
		user := userPVC(ns, "d", "top", class, 2, false)
		job := populateJobOf(user)
		Eventually(annotation(ns, "d", v1alpha1.AnnPrimeUID), timeout, interval).ShouldNot(BeEmpty())

		Expect(k8sClient.Delete(ctx, getImage(ns, "top"))).To(Succeed())
		Expect(k8sClient.Delete(ctx, getImage(ns, "base"))).To(Succeed())
		Eventually(func() string {
			c := condition(ns, "top", v1alpha1.ConditionDeletionBlocked)()
			if c == nil {
				return ""
			}
			return c.Message
		}, timeout, interval).Should(ContainSubstring("PersistentVolumeClaim/d"))
		Consistently(func() error { _, err := getImageErr(ns, "top"); return err }, 2*time.Second, interval).Should(Succeed())
		_, err := getImageErr(ns, "base")
		Expect(err).NotTo(HaveOccurred(), "the chain below is held by its child")
		// A population asked for now does not start, and holds nothing.
		late := userPVC(ns, "late", "top", class, 2, false)
		Eventually(annotation(ns, "late", v1alpha1.AnnMessage), timeout, interval).Should(Equal("image top is being deleted"))
		Consistently(populateJobs(late), time.Second, interval).Should(BeEmpty())
		Expect(condition(ns, "top", v1alpha1.ConditionDeletionBlocked)().Message).NotTo(ContainSubstring("PersistentVolumeClaim/late"))

		// The population ends (fails for good): both images go.
		finishJob(job, jobapi.ExitPermanent, permanent("bad"))
		Eventually(func() bool { _, err := getImageErr(ns, "top"); return apierrors.IsNotFound(err) }, timeout, interval).Should(BeTrue())
		Eventually(func() bool { _, err := getImageErr(ns, "base"); return apierrors.IsNotFound(err) }, timeout, interval).Should(BeTrue())
	})

	It("lets a deleted image go once the populating PVC is deleted first, reclaiming its Retain volume", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "a7a7a7a7", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime, job := primeOf(user), populateJobOf(user)
		pv := bindPrime(prime, class)
		Expect(k8sClient.Delete(ctx, getImage(ns, "img"))).To(Succeed())
		Eventually(condition(ns, "img", v1alpha1.ConditionDeletionBlocked), timeout, interval).ShouldNot(BeNil())

		Expect(k8sClient.Delete(ctx, getPVC(ns, "d"))).To(Succeed())
		Eventually(gone(job), timeout, interval).Should(BeTrue())
		Eventually(goneOrDeleting(prime), timeout, interval).Should(BeTrue())
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimDelete))
		Eventually(func() bool { _, err := getImageErr(ns, "img"); return apierrors.IsNotFound(err) }, timeout, interval).Should(BeTrue())
		Eventually(func() []string {
			p := &corev1.PersistentVolumeClaim{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(user), p); err != nil {
				return nil
			}
			return p.Finalizers
		}, timeout, interval).ShouldNot(ContainElement(v1alpha1.PopulatorFinalizer))
	})

	It("leaves nothing behind when the whole namespace is deleted at once", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "base", "a8a8a8a8", v1alpha1.VMDKImageSpec{Size: gi(1)})
		readyImage(ns, "top", "a9a9a9a9", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "base"}})
		user := userPVC(ns, "d", "top", class, 2, false)
		prime := primeOf(user)
		populateJobOf(user)
		pv := bindPrime(prime, class)
		Eventually(annotation(ns, "d", v1alpha1.AnnPopulateJobUID), timeout, interval).ShouldNot(BeEmpty())

		// envtest runs no namespace controller: delete everything in the
		// namespace at once, as it would.
		bg := client.PropagationPolicy("Background")
		Expect(k8sClient.DeleteAllOf(ctx, &v1alpha1.VMDKImage{}, client.InNamespace(ns))).To(Succeed())
		Expect(k8sClient.DeleteAllOf(ctx, &corev1.PersistentVolumeClaim{}, client.InNamespace(ns))).To(Succeed())
		Expect(k8sClient.DeleteAllOf(ctx, &batchv1.Job{}, client.InNamespace(ns), bg)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())

		Eventually(func() int {
			list := &v1alpha1.VMDKImageList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			return len(list.Items)
		}, timeout, interval).Should(BeZero(), "every image's finalizer is released")
		Eventually(func() []string {
			list := &corev1.PersistentVolumeClaimList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			var ours []string
			for _, p := range list.Items {
				for _, f := range p.Finalizers {
					if f != "kubernetes.io/pvc-protection" {
						ours = append(ours, p.Name+": "+f)
					}
				}
			}
			return ours
		}, timeout, interval).Should(BeEmpty(), "no PVC is held by vmdkpop")
		Eventually(func() int {
			list := &batchv1.JobList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			return len(list.Items)
		}, timeout, interval).Should(BeZero())
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimDelete), "the prime's Retain volume goes with it")
	})
})
