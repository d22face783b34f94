package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

var _ = Describe("the manager's cache", func() {
	ctx := context.Background()

	It("runs each controller with the configured concurrency", func() {
		Expect(managerConfig.MaxConcurrentReconciles).To(BeNumerically(">", 1))
		// The gauge is set as each controller starts: a spec run first
		// may look before the manager has started them.
		workers := func() map[string]float64 {
			families, err := metrics.Registry.Gather()
			Expect(err).NotTo(HaveOccurred())
			out := map[string]float64{}
			for _, f := range families {
				if f.GetName() != "controller_runtime_max_concurrent_reconciles" {
					continue
				}
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "controller" {
							out[l.GetValue()] = m.GetGauge().GetValue()
						}
					}
				}
			}
			return out
		}
		want := float64(managerConfig.MaxConcurrentReconciles)
		Eventually(workers, timeout, interval).Should(And(HaveKeyWithValue("vmdkimage", want), HaveKeyWithValue("populator", want)))
	})

	It("holds only vmdkpop's Jobs and pods, lean, and every PVC without managedFields", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		img := readyImage(ns, "img", "c0c0c0c0", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "user", "img", class, 2, false)
		job := populateJobOf(user)
		jobPod(job, corev1.PodRunning, nil)
		Expect(job.Labels).To(HaveKeyWithValue(v1alpha1.LabelManagedBy, v1alpha1.ManagedBy))
		Expect(job.Spec.Template.Labels).To(HaveKeyWithValue(v1alpha1.LabelManagedBy, v1alpha1.ManagedBy))
		Expect(primeOf(user).Labels).To(HaveKeyWithValue(v1alpha1.LabelManagedBy, v1alpha1.ManagedBy))
		Expect(getPVC(ns, img.Status.ClaimName).Labels).To(HaveKeyWithValue(v1alpha1.LabelManagedBy, v1alpha1.ManagedBy))

		// Someone else's Job and pod in the same namespace.
		other := forgedJob(ns, "someone-elses", user, pvcGVK)
		jobPod(other, corev1.PodRunning, nil)

		jobs := &batchv1.JobList{}
		Eventually(func() []string {
			Expect(managerCache.List(ctx, jobs, client.InNamespace(ns))).To(Succeed())
			var names []string
			for _, j := range jobs.Items {
				names = append(names, j.Name)
			}
			return names
		}, timeout, interval).Should(ConsistOf(job.Name, jobOf(ns, "img").Name))
		for _, j := range jobs.Items {
			Expect(j.ManagedFields).To(BeNil())
			Expect(j.Spec.Template.Spec.Containers).To(BeEmpty(), "the pod template is not kept")
			if j.Name != job.Name { // the image's finished Job: its status is kept
				Expect(j.Status.Conditions).NotTo(BeEmpty())
			}
		}
		pods := &corev1.PodList{}
		Eventually(func() int {
			Expect(managerCache.List(ctx, pods, client.InNamespace(ns))).To(Succeed())
			return len(pods.Items)
		}, timeout, interval).Should(Equal(2)) // the image Job's finished pod and the populate Job's running one
		for _, p := range pods.Items {
			Expect(metav1.IsControlledBy(&p, other)).To(BeFalse())
			Expect(p.ManagedFields).To(BeNil())
			Expect(p.Spec.Volumes).To(BeEmpty())
			Expect(p.Spec.Containers).To(HaveLen(1))
			Expect(p.Spec.Containers[0].Name).To(Equal(containerName))
			Expect(p.Status.ContainerStatuses).To(HaveLen(1))
		}

		// PVCs: the user's too (it carries nothing of ours), lean.
		pvcs := &corev1.PersistentVolumeClaimList{}
		Expect(managerCache.List(ctx, pvcs, client.InNamespace(ns))).To(Succeed())
		Expect(pvcs.Items).To(HaveLen(3))
		for _, p := range pvcs.Items {
			Expect(p.ManagedFields).To(BeNil())
		}
		Expect(getPVC(ns, "user").ManagedFields).NotTo(BeEmpty(), "the API server keeps them")
	})
})
