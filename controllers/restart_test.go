package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The manager is killed between two steps of its work, the cluster goes
// on without it (a Job finishes, the PV controller binds), and a fresh
// manager must take up where the old one stopped: nothing run twice,
// nothing left behind, nothing lost. What is counted is behaviour (Jobs,
// PVCs, events, final states), not names: Job naming belongs to the
// attempts' logic.

// settle is how long a fresh manager may take: it reconciles everything
// in the cluster (every earlier spec's objects too) before it gets to
// the spec's own.
const settle = 3 * timeout

// restart stops the manager, plays the cluster's part while it is down,
// and starts a fresh one (also when meanwhile fails, for the next specs).
func restart(meanwhile func()) {
	stopManager()
	DeferCleanup(func() {
		if managerStop == nil {
			startManager()
		}
	})
	meanwhile()
	startManager()
}

// imageChildren counts an image's Jobs and PVCs.
func imageChildren(ns, name string) func() [2]int {
	return func() [2]int {
		pvcs := &corev1.PersistentVolumeClaimList{}
		Expect(k8sClient.List(context.Background(), pvcs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelImage: name})).To(Succeed())
		return [2]int{len(jobsOf(ns, name)), len(pvcs.Items)}
	}
}

// primesOf lists the user PVC's prime PVCs.
func primesOf(user *corev1.PersistentVolumeClaim) []corev1.PersistentVolumeClaim {
	list := &corev1.PersistentVolumeClaimList{}
	ExpectWithOffset(1, k8sClient.List(context.Background(), list, client.InNamespace(user.Namespace), client.MatchingLabels{v1alpha1.LabelPopulates: string(user.UID)})).To(Succeed())
	return list.Items
}

// onlyJob waits for the user PVC's population to have exactly one Job
// and returns it.
func onlyJob(user *corev1.PersistentVolumeClaim) *batchv1.Job {
	EventuallyWithOffset(1, populateJobs(user), timeout, interval).Should(HaveLen(1))
	job := &batchv1.Job{}
	ExpectWithOffset(1, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: user.Namespace, Name: populateJobs(user)()[0]}, job)).To(Succeed())
	return job
}

var _ = Describe("a manager restart", Serial, func() {
	ctx := context.Background()

	It("stopped between creating a child and recording it: the record is still made", func() {
		ns := newNamespace()
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
		Expect(k8sClient.Create(ctx, owner)).To(Succeed())
		wc, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: k8sClient.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		// The manager's context ends the moment the create is made.
		rctx, stop := context.WithCancel(ctx)
		c := interceptor.NewClient(wc, interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			defer stop()
			return c.Create(ctx, obj, opts...)
		}})
		const key = "example.com/child-uid"
		child, created, err := ensureChild(rctx, c, k8sClient, owner, key, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "child"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(created).To(BeTrue())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(owner), owner)).To(Succeed())
		Expect(owner.Annotations[key]).To(Equal(string(child.UID)), "a child created and not recorded is refused as foreign by the next manager")
	})

	It("mid-create: a Job that finished while the manager was down is taken up, not run again", func() {
		ns := newNamespace()
		newImage(ns, "img", v1alpha1.VMDKImageSpec{Size: gi(1)})
		job := jobOf(ns, "img")
		restart(func() {
			finishJob(job, 0, succeeded("0c0c0c0c", "ffffffff", "monolithicSparse", 1<<30))
		})
		Eventually(phaseOfImage(ns, "img"), settle, interval).Should(Equal(v1alpha1.PhaseReady))
		img := getImage(ns, "img")
		Expect(img.Status.CID).To(Equal("0c0c0c0c"))
		Expect(img.Status.JobName).To(Equal(job.Name))
		Consistently(imageChildren(ns, "img"), 2*time.Second, interval).Should(Equal([2]int{1, 1}), "one Job and one PVC")
		Expect(eventCount(ns, "img", v1alpha1.EventCreateStarted)()).To(BeNumerically("<=", 1))
	})

	It("mid-import: the running Job is kept across the restart, its progress read on, and its result taken", func() {
		ns := newNamespace()
		newImage(ns, "imp", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "uploads", Path: "vm.vmdk"}}})
		job := jobOf(ns, "imp")
		pod := jobPod(job, corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":30,"bytesDone":3,"bytesTotal":10}`)
		Eventually(func() string { return getImage(ns, "imp").Status.Progress }, timeout, interval).Should(Equal("30.0%"))
		restart(func() {
			fakeLogs.set(pod.Name, `{"progress":80,"bytesDone":8,"bytesTotal":10}`)
		})
		Eventually(func() string { return getImage(ns, "imp").Status.Progress }, settle, interval).Should(Equal("80.0%"))
		Expect(getImage(ns, "imp").Status.Phase).To(Equal(v1alpha1.PhaseImporting))
		Expect(imageChildren(ns, "imp")()).To(Equal([2]int{1, 1}))

		finishJob(job, 0, succeeded("1d1d1d1d", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "imp"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "imp").Status.CID).To(Equal("1d1d1d1d"))
		Consistently(imageChildren(ns, "imp"), 2*time.Second, interval).Should(Equal([2]int{1, 1}))
		Expect(eventCount(ns, "imp", v1alpha1.EventImportStarted)()).To(Equal(int32(1)))
	})

	// populated runs a population up to the PV's handover: an image, the
	// user's PVC, its prime bound to a Retain PV, the Job finished, the
	// PV's claimRef moved to the user's PVC.
	populated := func(ns string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaim, *batchv1.Job, *corev1.PersistentVolume) {
		class := storageClass("immediate", false)
		readyImage(ns, "img", "2e2e2e2e", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "disk", "img", class, 2, false)
		job := onlyJob(user)
		Expect(primesOf(user)).To(HaveLen(1))
		prime := &primesOf(user)[0]
		pv := bindPrime(prime, class)
		finishJob(job, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30, TargetFormat: "raw"})
		Eventually(claimRefOf(pv), timeout, interval).Should(Equal(user.UID))
		return user, getPVC(ns, prime.Name), job, pv
	}

	// converged checks a population's end: the user's PVC holds the
	// populated volume, its prime PVC and Job are gone, its finalizer is
	// released, the volume is still the user's and still Retain (never
	// reclaimed as the prime's), and no second attempt ever started.
	converged := func(user, prime *corev1.PersistentVolumeClaim, job *batchv1.Job, pv *corev1.PersistentVolume) {
		ns := user.Namespace
		Eventually(annotation(ns, user.Name, v1alpha1.AnnPhase), settle, interval).Should(Equal(v1alpha1.PopSucceeded))
		Eventually(goneOrDeleting(prime), timeout, interval).Should(BeTrue())
		Eventually(gone(job), timeout, interval).Should(BeTrue())
		Eventually(func() []string { return getPVC(ns, user.Name).Finalizers }, timeout, interval).ShouldNot(ContainElement(v1alpha1.PopulatorFinalizer))
		u := getPVC(ns, user.Name)
		Expect(u.Annotations[v1alpha1.AnnVolume]).To(Equal(pv.Name))
		Expect(u.Spec.VolumeName).To(Equal(pv.Name))
		Expect(claimRefOf(pv)()).To(Equal(user.UID))
		Expect(reclaimPolicy(pv)()).To(Equal(corev1.PersistentVolumeReclaimRetain))
		Consistently(populateJobs(user), 2*time.Second, interval).Should(BeEmpty())
		Expect(primesOf(user)).To(HaveLen(1), "no second prime PVC")
		Expect(eventCount(ns, user.Name, v1alpha1.EventPopulatorStarted)()).To(Equal(int32(1)))
	}

	It("mid-rebind: a handover made just before the manager went down is finished, not started again", func() {
		ns := newNamespace()
		user, prime, job, pv := populated(ns)
		restart(func() {
			// The PV controller binds the user's PVC and loses the prime.
			prime.Status.Phase = corev1.ClaimLost
			Expect(k8sClient.Status().Update(ctx, prime)).To(Succeed())
			bindUser(ns, user.Name, pv.Name)
		})
		converged(user, prime, job, pv)
	})

	It("mid-cleanup: the Job deleted and the prime PVC not yet, the next manager deletes the rest and leaves the volume alone", func() {
		ns := newNamespace()
		user, prime, job, pv := populated(ns)
		restart(func() {
			// The PV controller binds the user's PVC; the prime PVC still
			// says Bound (it is marked Lost a sync later).
			bindUser(ns, user.Name, pv.Name)
			// Where the old manager stopped: the Job gone, the prime left.
			uid := job.UID
			Expect(k8sClient.Delete(ctx, job, client.Preconditions{UID: &uid}, client.PropagationPolicy("Background"))).To(Succeed())
			Eventually(gone(job), timeout, interval).Should(BeTrue())
		})
		converged(user, prime, job, pv)
	})
})
