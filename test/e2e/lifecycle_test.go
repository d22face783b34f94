//go:build e2e

package e2e

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The lifecycle on a real cluster: what users meet after the happy path.

func waitPhaseIn(ns, name string, phase v1alpha1.Phase) *v1alpha1.VMDKImage {
	GinkgoHelper()
	var img *v1alpha1.VMDKImage
	Eventually(func() v1alpha1.Phase {
		img = imageIn(ns, name)
		return img.Status.Phase
	}, timeout, time.Second).Should(Equal(phase), name)
	return img
}

// annotateIn sets one annotation on an image, as `kubectl annotate` does.
func annotateIn(ns, name, key, value string) {
	GinkgoHelper()
	Eventually(func() error {
		img := imageIn(ns, name)
		if img.Annotations == nil {
			img.Annotations = map[string]string{}
		}
		img.Annotations[key] = value
		return k8s.Update(ctx, img)
	}, timeout, time.Second).Should(Succeed())
}

func newClaim(ns, name string, size int64, source *corev1.TypedObjectReference) *corev1.PersistentVolumeClaim {
	GinkgoHelper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *mib(size)}},
			DataSourceRef: source,
		},
	}
	Expect(k8s.Create(ctx, pvc)).To(Succeed())
	return pvc
}

var _ = Describe("lifecycle", Ordered, func() {
	It("re-runs a failed import once its source is fixed, by the retry annotation", func() {
		ns := tenantNamespace("vmdkpop-e2e-rerun")
		newClaim(ns, "uploads", 64, nil)
		img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fixme"}, Spec: v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "uploads", Path: "disk.vmdk"}},
			Storage: v1alpha1.StorageSpec{Size: mib(64)},
		}}
		Expect(k8s.Create(ctx, img)).To(Succeed())
		failed := waitPhaseIn(ns, "fixme", v1alpha1.PhaseFailed)
		Expect(meta.FindStatusCondition(failed.Status.Conditions, v1alpha1.ConditionReady).Reason).To(Equal(jobapi.ReasonSourceNotFound))
		firstJob := failed.Status.JobName

		// The user puts the disk where the image said it would be...
		src := []podVolume{{claim: "uploads", path: "/src"}}
		podIn(ns, "make-source", []string{"create", "/src/disk.vmdk", "16777216"}, src...)
		podIn(ns, "fill-source", []string{"write", "--random", "5", "0", "3M", "/src/disk.vmdk"}, src...)
		want := podIn(ns, "sum-source", []string{"checksum", "/src/disk.vmdk"}, podVolume{claim: "uploads", path: "/src", readOnly: true}).SHA256

		// ...and asks for a fresh attempt, without deleting anything.
		annotateIn(ns, "fixme", v1alpha1.AnnotationRetry, "source-uploaded")
		done := waitPhaseIn(ns, "fixme", v1alpha1.PhaseReady)
		Expect(done.Status.Retried).To(Equal("source-uploaded"))
		Expect(done.Status.JobName).NotTo(Equal(firstJob))
		Expect(done.Status.VirtualSize).To(Equal(int64(16 << 20)))
		got := podIn(ns, "sum-image", []string{"checksum", "/images/fixme/disk.vmdk"},
			podVolume{claim: done.Status.ClaimName, path: "/images/fixme", readOnly: true}).SHA256
		Expect(got).To(Equal(want))
	})

	It("finishes a population across a manager restart mid-way, with nothing left behind", func() {
		ns := tenantNamespace("vmdkpop-e2e-restart")
		img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "golden"}, Spec: v1alpha1.VMDKImageSpec{Size: mib(64)}}
		Expect(k8s.Create(ctx, img)).To(Succeed())
		golden := waitPhaseIn(ns, "golden", v1alpha1.PhaseReady)
		vol := podVolume{claim: golden.Status.ClaimName, path: "/images/golden"}
		podIn(ns, "fill-golden", []string{"write", "--random", "9", "0", "24M", "/images/golden/disk.vmdk"}, vol)
		vol.readOnly = true
		want := podIn(ns, "sum-golden", []string{"checksum", "/images/golden/disk.vmdk"}, vol).SHA256

		newClaim(ns, "vm-disk", 96, &corev1.TypedObjectReference{APIGroup: ptr.To("storage.vmdkpop.io"), Kind: "VMDKImage", Name: "golden"})
		// The claim binds when its consumer is scheduled (the local class
		// is WaitForFirstConsumer): the consumer reads the disk once it is.
		consumer := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "consumer"},
			Spec: hardenedPodSpec(qemuUID, []string{"checksum", "-f", "raw", "--size", "67108864", "/disk/disk.img", "--result-file", "/dev/termination-log"},
				podVolume{claim: "vm-disk", path: "/disk", readOnly: true}),
		}
		Expect(k8s.Create(ctx, consumer)).To(Succeed())
		Eventually(func() string {
			pvc := &corev1.PersistentVolumeClaim{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "vm-disk"}, pvc)).To(Succeed())
			return pvc.Annotations[v1alpha1.AnnPhase]
		}, timeout, 200*time.Millisecond).Should(Equal(v1alpha1.PopPopulating))

		By("restarting the manager while the population runs")
		run("-n", "vmdkpop-system", "delete", "pod", "-l", "app.kubernetes.io/name=vmdkpop", "--wait=false")
		run("-n", "vmdkpop-system", "rollout", "status", "deploy/vmdkpop-controller-manager", "--timeout", "180s")

		Eventually(func() corev1.PodPhase {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(consumer), consumer)).To(Succeed())
			return consumer.Status.Phase
		}, timeout, time.Second).Should(Equal(corev1.PodSucceeded))
		r, err := jobapi.Parse(consumer.Status.ContainerStatuses[0].State.Terminated.Message)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.SHA256).To(Equal(want))

		pvc := &corev1.PersistentVolumeClaim{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "vm-disk"}, pvc)).To(Succeed())
		Expect(pvc.Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopSucceeded))
		// Nothing of the population outlives it: prime PVCs, their Jobs,
		// and PVs still naming a prime.
		Eventually(func() []string {
			var left []string
			claims := &corev1.PersistentVolumeClaimList{}
			Expect(k8s.List(ctx, claims, client.InNamespace(ns))).To(Succeed())
			for _, c := range claims.Items {
				if strings.HasPrefix(c.Name, "prime-") {
					left = append(left, "pvc/"+c.Name)
				}
			}
			pvs := &corev1.PersistentVolumeList{}
			Expect(k8s.List(ctx, pvs)).To(Succeed())
			for _, pv := range pvs.Items {
				if ref := pv.Spec.ClaimRef; ref != nil && ref.Namespace == ns && strings.HasPrefix(ref.Name, "prime-") {
					left = append(left, "pv/"+pv.Name)
				}
			}
			return left
		}, timeout, time.Second).Should(BeEmpty())
	})

	It("says so when storage.size grows on a class that cannot expand, and stays Ready", func() {
		ns := tenantNamespace("vmdkpop-e2e-resize")
		img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rigid"},
			Spec: v1alpha1.VMDKImageSpec{Size: mib(16), Storage: v1alpha1.StorageSpec{Size: mib(64)}}}
		Expect(k8s.Create(ctx, img)).To(Succeed())
		ready := waitPhaseIn(ns, "rigid", v1alpha1.PhaseReady)
		Eventually(func() error {
			img := imageIn(ns, "rigid")
			img.Spec.Storage.Size = mib(128)
			return k8s.Update(ctx, img)
		}, timeout, time.Second).Should(Succeed())
		Eventually(func() *metav1.Condition {
			return meta.FindStatusCondition(imageIn(ns, "rigid").Status.Conditions, v1alpha1.ConditionStorage)
		}, timeout, time.Second).Should(And(Not(BeNil()), HaveField("Reason", v1alpha1.ReasonExpansionUnsupported)))
		after := imageIn(ns, "rigid")
		Expect(after.Status.Phase).To(Equal(v1alpha1.PhaseReady))
		Expect(after.Status.ObservedGeneration).To(Equal(after.Generation))
		Expect(after.Status.JobName).To(Equal(ready.Status.JobName))
		Expect(run("get", "events", "-n", ns, "--field-selector", "reason="+v1alpha1.ReasonExpansionUnsupported, "-o", "name")).NotTo(BeEmpty())
		// What kubectl get shows: sizes for people, and the Ready reason.
		out := run("get", "vmdkimages", "-n", ns, "rigid")
		Expect(out).To(And(ContainSubstring("16Mi"), ContainSubstring("Succeeded")))
	})
})
