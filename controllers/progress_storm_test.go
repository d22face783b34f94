package controllers

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

var _ = Describe("progress from pod logs", func() {
	ctx := context.Background()

	// storm changes the image n times, a reconcile each, and says how long
	// that took.
	storm := func(ns, name string, n int) time.Duration {
		start := time.Now()
		for i := range n {
			img := getImage(ns, name)
			patch := client.MergeFrom(img.DeepCopy())
			img.Annotations["example.com/storm"] = fmt.Sprint(i)
			Expect(k8sClient.Patch(ctx, img, patch)).To(Succeed())
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}

	It("reads a running Job's log at most once per progress interval, however often it reconciles, and a finished Job's never", func() {
		ns := newNamespace()
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1)})
		job := jobOf(ns, "img")
		pod := jobPod(job, corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":42,"bytesDone":42,"bytesTotal":100}`)
		Eventually(func() string { return getImage(ns, "img").Status.Progress }, timeout, interval).Should(Equal("42.0%"))

		before := fakeLogs.readsOf(pod.Name)
		took := storm(ns, "img", 40)
		reads := fakeLogs.readsOf(pod.Name) - before
		Expect(reads).To(BeNumerically("<=", int(took/progressInterval)+1), "%d reads in %v of 40 reconciles", reads, took)
		Expect(getImage(ns, "img").Status.Progress).To(Equal("42.0%"), "the last lines read are served meanwhile")

		finishJob(job, 0, succeeded("42424242", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "img"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		before = fakeLogs.readsOf(pod.Name)
		storm(ns, "img", 10)
		time.Sleep(progressInterval + time.Second)
		Expect(fakeLogs.readsOf(pod.Name)).To(Equal(before), "the finished Job's pod log was read")
	})
})
