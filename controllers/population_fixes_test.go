package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A population's corner cases: what a tenant may forge on its own PVC,
// and the ends of a population that must not hold anything forever.

// forgePrime plays a tenant: a PVC under the prime's name, Bound to the
// PV named pv, recorded on the user's PVC as its prime.
func forgePrime(user *corev1.PersistentVolumeClaim, pv string) *corev1.PersistentVolumeClaim {
	ctx := context.Background()
	squatter := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: user.Namespace, Name: "prime-" + string(user.UID)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: user.Spec.AccessModes, StorageClassName: user.Spec.StorageClassName,
			Resources: user.Spec.Resources, VolumeName: pv,
		},
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, squatter)).To(Succeed())
	squatter.Status.Phase = corev1.ClaimBound
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, squatter)).To(Succeed())
	setAnnotation(user.Namespace, user.Name, v1alpha1.AnnPrimeUID, string(squatter.UID))
	return squatter
}

// claimVolume plays the PV controller binding pv to claim.
func claimVolume(pv *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) {
	EventuallyWithOffset(1, func() error {
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pv), pv)).To(Succeed())
		pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID}
		return k8sClient.Update(context.Background(), pv)
	}, timeout, interval).Should(Succeed())
}

// released waits for the populator's finalizer to leave a deleted PVC.
func released(ns, name string) func() []string {
	return func() []string {
		p := &corev1.PersistentVolumeClaim{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			return nil
		}
		return p.Finalizers
	}
}

// staleCache plays a manager's cache behind the cluster: it still holds
// image as it was (Ready, not being deleted), and no images or PVCs in its
// lists. Everything else is read live.
type staleCache struct {
	client.Client
	image *v1alpha1.VMDKImage
}

func (c staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if img, ok := obj.(*v1alpha1.VMDKImage); ok && c.image != nil && key == client.ObjectKeyFromObject(c.image) {
		c.image.DeepCopyInto(img)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func (c staleCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	switch list.(type) {
	case *v1alpha1.VMDKImageList, *corev1.PersistentVolumeClaimList:
		return nil
	}
	return c.Client.List(ctx, list, opts...)
}

// holdImage deletes an image but keeps it there, being deleted, under a
// finalizer of the spec's own; the returned func lets it go.
func holdImage(ns, name string) func() {
	ctx := context.Background()
	const hold = "test.vmdkpop.io/hold"
	EventuallyWithOffset(1, func() error {
		img := getImage(ns, name)
		img.Finalizers = append(img.Finalizers, hold)
		return k8sClient.Update(ctx, img)
	}, timeout, interval).Should(Succeed())
	ExpectWithOffset(1, k8sClient.Delete(ctx, getImage(ns, name))).To(Succeed())
	return func() {
		EventuallyWithOffset(1, func() error {
			img, err := getImageErr(ns, name)
			if err != nil {
				return client.IgnoreNotFound(err)
			}
			var keep []string
			for _, f := range img.Finalizers {
				if f != hold {
					keep = append(keep, f)
				}
			}
			img.Finalizers = keep
			return k8sClient.Update(ctx, img)
		}, timeout, interval).Should(Succeed())
	}
}

var _ = Describe("population fixes", func() {
	ctx := context.Background()

	It("never sets a volume bound to a forged prime PVC to be deleted: only one provisioned for the prime after it was made", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		// Two populations that wait (no image): their tenant forges their
		// primes. One names a provisioned Retain PV made before it (a
		// recycled one), the other a static PV made after it.
		older := userPVC(ns, "older", "nothing", class, 2, false)
		static := userPVC(ns, "static", "nothing", class, 2, false)
		Eventually(annotation(ns, "static", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("does not exist"))
		recycled := newPV("pv-"+ns+"-recycled", class, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "gone"}})
		time.Sleep(1100 * time.Millisecond) // creation times have seconds
		claimVolume(recycled, forgePrime(older, recycled.Name))
		squatter := forgePrime(static, "pv-"+ns+"-static")
		time.Sleep(1100 * time.Millisecond)
		manual := newPV("pv-"+ns+"-static", class, squatter)
		Eventually(func() error {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(manual), manual)).To(Succeed())
			delete(manual.Annotations, annProvisionedBy) // made by hand, after the squatter
			return k8sClient.Update(ctx, manual)
		}, timeout, interval).Should(Succeed())

		// The tenant deletes its populations: their cleanup deletes its
		// own squatters, and leaves both volumes Retain.
		Expect(k8sClient.Delete(ctx, getPVC(ns, "older"))).To(Succeed())
		Expect(k8sClient.Delete(ctx, getPVC(ns, "static"))).To(Succeed())
		Eventually(released(ns, "older"), timeout, interval).ShouldNot(ContainElement(v1alpha1.PopulatorFinalizer))
		Eventually(released(ns, "static"), timeout, interval).ShouldNot(ContainElement(v1alpha1.PopulatorFinalizer))
		Consistently(func() []corev1.PersistentVolumeReclaimPolicy {
			return []corev1.PersistentVolumeReclaimPolicy{reclaimPolicy(recycled)(), reclaimPolicy(manual)()}
		}, 2*time.Second, interval).Should(HaveEach(corev1.PersistentVolumeReclaimRetain))
	})

	It("ends a population whose Job is gone while its image is being deleted, and lets the image go", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "c1c1c1c1", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime, job := primeOf(user), populateJobOf(user)
		Eventually(annotation(ns, "d", v1alpha1.AnnPopulateJobUID), timeout, interval).ShouldNot(BeEmpty())
		Expect(k8sClient.Delete(ctx, getImage(ns, "img"))).To(Succeed())
		Eventually(condition(ns, "img", v1alpha1.ConditionDeletionBlocked), timeout, interval).ShouldNot(BeNil())

		// The Job goes (its user, or its TTL) before its end was seen.
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy("Background"))).To(Succeed())
		Eventually(func() bool { _, err := getImageErr(ns, "img"); return apierrors.IsNotFound(err) }, timeout, interval).Should(BeTrue())
		Eventually(goneOrDeleting(prime), timeout, interval).Should(BeTrue())
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPrimeUID))
		Expect(eventCount(ns, "d", v1alpha1.EventPopulatorRestarted)()).To(BeNumerically("==", 1))
		Eventually(annotation(ns, "d", v1alpha1.AnnMessage), timeout, interval).Should(Equal("image img does not exist yet"))
		Consistently(populateJobs(user), time.Second, interval).Should(BeEmpty())
	})

	It("starts no Job from a cached Ready image that is being deleted: the image is read live first", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "c2c2c2c2", v1alpha1.VMDKImageSpec{Size: gi(1)})
		cached := getImage(ns, "img")
		release := holdImage(ns, "img")
		defer release()
		user := userPVC(ns, "d", "img", class, 2, false)
		// A populator whose cache still has the image Ready.
		r := &PopulatorReconciler{Client: staleCache{k8sClient, cached}, APIReader: k8sClient, Scheme: k8sClient.Scheme(),
			Logs: fakeLogs, Imager: managerConfig.Imager, DiskUID: 107, DiskGID: 107}
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(user)}
		for range 4 {
			_, err := r.Reconcile(ctx, req)
			Expect(client.IgnoreNotFound(err)).To(Or(Succeed(), MatchError(ContainSubstring("the object has been modified"))))
		}
		Consistently(populateJobs(user), time.Second, interval).Should(BeEmpty())
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPrimeUID), "the population holds nothing of the image")
	})

	It("lets an image go only once no population holds it, read live: a population the cache has not seen yet holds it", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "c3c3c3c3", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		populateJobOf(user)
		Eventually(annotation(ns, "d", v1alpha1.AnnPrimeUID), timeout, interval).ShouldNot(BeEmpty())
		release := holdImage(ns, "img")
		defer release()
		Eventually(condition(ns, "img", v1alpha1.ConditionDeletionBlocked), timeout, interval).ShouldNot(BeNil())
		// An image reconciler whose cache has not seen the population.
		r := &VMDKImageReconciler{Client: staleCache{Client: k8sClient}, APIReader: k8sClient, Scheme: k8sClient.Scheme(), Logs: fakeLogs, Imager: managerConfig.Imager}
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "img"}})
		Expect(client.IgnoreNotFound(err)).To(Or(Succeed(), MatchError(ContainSubstring("the object has been modified"))))
		Expect(getImage(ns, "img").Finalizers).To(ContainElement(v1alpha1.Finalizer))
	})

	It("records a refusal as a failed attempt: it holds nothing of the image, which may go", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		x := userPVC(ns, "x", "img", class, 2, false)
		forgedJob(ns, "populate-"+string(x.UID), x, pvcGVK)
		readyImage(ns, "img", "c4c4c4c4", v1alpha1.VMDKImageSpec{Size: gi(1)})
		Eventually(annotation(ns, "x", v1alpha1.AnnPopFailedAt), timeout, interval).ShouldNot(BeEmpty())
		Expect(getPVC(ns, "x").Annotations).To(HaveKey(v1alpha1.AnnPrimeUID))
		Expect(getPVC(ns, "x").Annotations[v1alpha1.AnnMessage]).To(And(ContainSubstring("not created by vmdkpop"), ContainSubstring(v1alpha1.AnnotationRetry)))
		Expect(k8sClient.Delete(ctx, getImage(ns, "img"))).To(Succeed())
		Eventually(func() bool { _, err := getImageErr(ns, "img"); return apierrors.IsNotFound(err) }, timeout, interval).Should(BeTrue())
		Expect(eventCount(ns, "x", v1alpha1.ReasonForeignObject)()).To(BeNumerically("==", 1))
	})

	It("acknowledges a retry token set while a population runs, and keeps the backoff of a later failure", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "c5c5c5c5", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		job := populateJobOf(user)
		setAnnotation(ns, "d", v1alpha1.AnnotationRetry, "early")
		Eventually(annotation(ns, "d", v1alpha1.AnnPopRetried), timeout, interval).Should(Equal("early"))
		Expect(populateJobs(user)()).To(ConsistOf(job.Name), "a running population gets no second Job")

		finishJob(job, 1, transient("EIO"))
		Eventually(annotation(ns, "d", v1alpha1.AnnPopRetryAt), timeout, interval).ShouldNot(BeEmpty())
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnMessage]).To(ContainSubstring("retry 1 of 2"))
		Expect(getPVC(ns, "d").Annotations).NotTo(HaveKey(v1alpha1.AnnPopAttempt), "the token fires no fresh attempt at the failure")
	})

	It("forgets a populated PVC's prime and Job once cleaned up, so its later events delete nothing", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "c6c6c6c6", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		prime, job := primeOf(user), populateJobOf(user)
		pv := bindPrime(prime, class)
		finishJob(job, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30, TargetFormat: "raw"})
		Eventually(claimRefOf(pv), timeout, interval).Should(Equal(user.UID))
		bindUser(ns, "d", pv.Name)
		Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopSucceeded))
		Eventually(goneOrDeleting(prime), timeout, interval).Should(BeTrue())
		Eventually(func() map[string]string { return getPVC(ns, "d").Annotations }, timeout, interval).ShouldNot(Or(HaveKey(v1alpha1.AnnPrimeUID), HaveKey(v1alpha1.AnnPopulateJobUID)))
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnVolume]).To(Equal(pv.Name))
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimRetain))
	})
})
