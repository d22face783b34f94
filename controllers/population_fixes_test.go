package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
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
})
