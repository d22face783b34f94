package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

const (
	timeout  = 20 * time.Second
	interval = 100 * time.Millisecond
)

var nsCount atomic.Int32

func newNamespace() string {
	ns := fmt.Sprintf("test-%d", nsCount.Add(1))
	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	return ns
}

func gi(n int64) *resource.Quantity { return resource.NewQuantity(n<<30, resource.BinarySI) }

func newImage(ns, name string, spec v1alpha1.VMDKImageSpec) *v1alpha1.VMDKImage {
	img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	ExpectWithOffset(1, k8sClient.Create(context.Background(), img)).To(Succeed())
	return img
}

func getImage(ns, name string) *v1alpha1.VMDKImage {
	img := &v1alpha1.VMDKImage{}
	ExpectWithOffset(1, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, img)).To(Succeed())
	return img
}

// jobOf waits for the image's one Job.
func jobOf(ns, name string) *batchv1.Job {
	jobs := &batchv1.JobList{}
	EventuallyWithOffset(1, func() int {
		Expect(k8sClient.List(context.Background(), jobs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelImage: name})).To(Succeed())
		return len(jobs.Items)
	}, timeout, interval).Should(Equal(1))
	return &jobs.Items[0]
}

func noJob(ns, name string) {
	ConsistentlyWithOffset(1, func() int {
		jobs := &batchv1.JobList{}
		Expect(k8sClient.List(context.Background(), jobs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelImage: name})).To(Succeed())
		return len(jobs.Items)
	}, 2*time.Second, interval).Should(BeZero())
}

// jobPod creates a pod of the Job in the given state, as the Job
// controller and kubelet would.
func jobPod(job *batchv1.Job, phase corev1.PodPhase, term *corev1.ContainerStateTerminated) *corev1.Pod {
	ctx := context.Background()
	pod := &corev1.Pod{
		// The Job controller labels its pods with the template's labels.
		ObjectMeta: metav1.ObjectMeta{GenerateName: job.Name + "-", Namespace: job.Namespace, Labels: podLabels(job),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))}},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	st := corev1.ContainerStatus{Name: containerName, Image: job.Spec.Template.Spec.Containers[0].Image}
	if term != nil {
		st.State.Terminated = term
	} else {
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
	}
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{st}}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	return pod
}

// podLabels are the labels the Job controller gives job's pods.
func podLabels(job *batchv1.Job) map[string]string {
	l := map[string]string{batchv1.JobNameLabel: job.Name, batchv1.ControllerUidLabel: string(job.UID)}
	for k, v := range job.Spec.Template.Labels {
		l[k] = v
	}
	return l
}

// finishJob ends the Job: a pod that exited with code and wrote res as
// its termination message, and the Job's terminal conditions.
func finishJob(job *batchv1.Job, code int32, res *jobapi.Result) {
	ctx := context.Background()
	msg := ""
	if res != nil {
		b, _ := json.Marshal(res)
		msg = string(b)
	}
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	jobPod(job, phase, &corev1.ContainerStateTerminated{ExitCode: code, Message: msg, FinishedAt: metav1.Now(), Reason: "Completed"})
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
	now := metav1.Now()
	if job.Status.StartTime == nil { // immutable once set
		job.Status.StartTime = &now
	}
	if code == 0 {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
	} else {
		job.Status.Failed = 1
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "PodFailurePolicy", Message: "exit code"},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: "PodFailurePolicy", Message: fmt.Sprintf("container imager exited with code %d", code)},
		}
	}
	Expect(k8sClient.Status().Update(ctx, job)).To(Succeed())
}

func succeeded(cid, parentCID, createType string, size int64) *jobapi.Result {
	return &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, CID: cid, ParentCID: parentCID,
		CreateType: createType, VirtualSize: size, AllocatedBytes: 65536, TargetFormat: "vmdk"}
}

func phaseOfImage(ns, name string) func() v1alpha1.Phase {
	return func() v1alpha1.Phase { return getImage(ns, name).Status.Phase }
}

func condition(ns, name, typ string) func() *metav1.Condition {
	return func() *metav1.Condition { return meta.FindStatusCondition(getImage(ns, name).Status.Conditions, typ) }
}

// eventReasons lists the reasons of the events about an image.
func eventReasons(ns, name string) func() []string {
	return func() []string {
		list := &eventsv1.EventList{}
		Expect(k8sClient.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
		var out []string
		for _, e := range list.Items {
			if e.Regarding.Name == name {
				out = append(out, e.Reason)
			}
		}
		return out
	}
}

// readyImage makes a blank image and completes its Job.
func readyImage(ns, name, cid string, spec v1alpha1.VMDKImageSpec) *v1alpha1.VMDKImage {
	newImage(ns, name, spec)
	parentCID := "ffffffff"
	if spec.BackingImage != nil {
		parentCID = getImage(ns, spec.BackingImage.Name).Status.CID
	}
	finishJob(jobOf(ns, name), 0, succeeded(cid, parentCID, "monolithicSparse", spec.Size.Value()))
	EventuallyWithOffset(1, phaseOfImage(ns, name), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
	return getImage(ns, name)
}

var _ = Describe("VMDKImage controller", func() {
	ctx := context.Background()

	It("creates a blank image: PVC, hardened Job, progress, then status from the result", func() {
		ns := newNamespace()
		newImage(ns, "blank", v1alpha1.VMDKImageSpec{Size: gi(1), AdapterType: "lsilogic", HWVersion: ptr.To[int32](7)})
		job := jobOf(ns, "blank")
		Eventually(phaseOfImage(ns, "blank"), timeout, interval).Should(Equal(v1alpha1.PhaseCreating))
		img := getImage(ns, "blank")
		Expect(img.Finalizers).To(ContainElement(v1alpha1.Finalizer))
		Expect(img.Spec.Subformat).To(Equal(v1alpha1.MonolithicSparse)) // CRD default

		pvc := &corev1.PersistentVolumeClaim{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: img.Status.ClaimName}, pvc)).To(Succeed())
		Expect(metav1.IsControlledBy(pvc, img)).To(BeTrue())
		req := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		Expect(req.Value()).To(BeNumerically(">", int64(1<<30)))
		Expect(pvc.Spec.AccessModes).To(Equal([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}))

		Expect(metav1.IsControlledBy(job, img)).To(BeTrue())
		Expect(job.Name).To(Equal(img.Status.JobName))
		c := job.Spec.Template.Spec.Containers[0]
		Expect(c.Args).To(Equal([]string{"create", "-q", "--result-file", "/dev/termination-log", "--root", "/images",
			"-o", "subformat=monolithicSparse,adapter_type=lsilogic,hwversion=7", "/images/blank/disk.vmdk", "1073741824"}))
		Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(*c.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
		Expect(c.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
		ps := job.Spec.Template.Spec
		Expect(*ps.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(ps.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
		Expect(*ps.AutomountServiceAccountToken).To(BeFalse())
		Expect(ps.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal(pvc.Name))
		// Exit codes 2 and 3 fail the Job at once; nothing else is special.
		Expect(job.Spec.PodFailurePolicy.Rules).To(Equal([]batchv1.PodFailurePolicyRule{{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: ptr.To("imager"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{2, 3},
			},
		}}))
		Expect(job.Spec.TTLSecondsAfterFinished).NotTo(BeNil())

		// Progress comes from the running pod's log.
		pod := jobPod(job, corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":12,"bytesDone":1,"bytesTotal":8}`, "imager: retrying in 1s", `{"progress":37.5,"bytesDone":3,"bytesTotal":8}`, "imager: noise")
		Eventually(func() string { return getImage(ns, "blank").Status.Progress }, timeout, interval).Should(Equal("37.5%"))
		Expect(k8sClient.Delete(ctx, pod)).To(Succeed())

		finishJob(job, 0, succeeded("1234abcd", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "blank"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		img = getImage(ns, "blank")
		Expect(img.Status.CID).To(Equal("1234abcd"))
		Expect(img.Status.ParentCID).To(Equal("ffffffff"))
		Expect(img.Status.CreateType).To(Equal("monolithicSparse"))
		Expect(img.Status.VirtualSize).To(Equal(int64(1 << 30)))
		Expect(img.Status.AllocatedBytes).To(Equal(int64(65536)))
		Expect(img.Status.Progress).To(Equal("100%"))
		Expect(img.Status.ObservedGeneration).To(Equal(img.Generation))
		ready := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
		Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		Expect(ready.Reason).To(Equal(v1alpha1.ReasonSucceeded))
		Eventually(eventReasons(ns, "blank"), timeout, interval).Should(ContainElements(v1alpha1.EventCreateStarted, v1alpha1.EventReady))

		// A finished Job deleted by its TTL is not run again.
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		noJob(ns, "blank")
		Expect(getImage(ns, "blank").Status.Phase).To(Equal(v1alpha1.PhaseReady))
	})

	It("makes a child wait for its parent, mounts the chain, and watches the CIDs", func() {
		ns := newNamespace()
		newImage(ns, "child", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "parent"}})
		Eventually(condition(ns, "child", v1alpha1.ConditionReady), timeout, interval).Should(
			And(Not(BeNil()), HaveField("Reason", v1alpha1.ReasonWaitingForBacking)))
		Expect(getImage(ns, "child").Status.Phase).To(Equal(v1alpha1.PhasePending))
		noJob(ns, "child")

		newImage(ns, "parent", v1alpha1.VMDKImageSpec{Size: gi(1)})
		noJob(ns, "child") // the parent is not Ready yet
		finishJob(jobOf(ns, "parent"), 0, succeeded("aaaaaaaa", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(phaseOfImage(ns, "parent"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))

		job := jobOf(ns, "child")
		parent := getImage(ns, "parent")
		ps := job.Spec.Template.Spec
		Expect(ps.Containers[0].Args).To(ContainElements("-b", "/images/parent/disk.vmdk", "--root", "/images"))
		Expect(ps.Volumes[1].PersistentVolumeClaim.ClaimName).To(Equal(parent.Status.ClaimName))
		Expect(ps.Volumes[1].PersistentVolumeClaim.ReadOnly).To(BeTrue())
		Expect(ps.Containers[0].VolumeMounts[1]).To(HaveField("MountPath", "/images/parent"))
		Expect(ps.Containers[0].VolumeMounts[1].ReadOnly).To(BeTrue())

		finishJob(job, 0, succeeded("bbbbbbbb", "aaaaaaaa", "monolithicSparse", 1<<30))
		Eventually(condition(ns, "child", v1alpha1.ConditionChainValid), timeout, interval).Should(
			And(Not(BeNil()), HaveField("Status", metav1.ConditionTrue)))

		// The parent's content changed under the child: the chain is broken.
		parent = getImage(ns, "parent")
		parent.Status.CID = "cccccccc"
		Expect(k8sClient.Status().Update(ctx, parent)).To(Succeed())
		Eventually(condition(ns, "child", v1alpha1.ConditionChainValid), timeout, interval).Should(
			And(HaveField("Status", metav1.ConditionFalse), HaveField("Reason", v1alpha1.ReasonParentChanged)))
		Eventually(eventReasons(ns, "child"), timeout, interval).Should(ContainElement(v1alpha1.EventChainBroken))
	})

	It("re-reads a Ready image's files when asked to refresh", func() {
		ns := newNamespace()
		readyImage(ns, "base", "11111111", v1alpha1.VMDKImageSpec{Size: gi(1)})
		readyImage(ns, "kid", "22222222", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "base"}})
		Eventually(condition(ns, "kid", v1alpha1.ConditionChainValid), timeout, interval).Should(HaveField("Status", metav1.ConditionTrue))

		// Something wrote to base (its CID changed): refresh it.
		annotateImage(ns, "base", v1alpha1.AnnotationRefresh, "after-write")
		var job *batchv1.Job
		Eventually(func() bool {
			jobs := &batchv1.JobList{}
			Expect(k8sClient.List(ctx, jobs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelImage: "base"})).To(Succeed())
			for i := range jobs.Items {
				if strings.Contains(jobs.Items[i].Name, "-refresh-") {
					job = &jobs.Items[i]
				}
			}
			return job != nil
		}, timeout, interval).Should(BeTrue())
		args := job.Spec.Template.Spec.Containers[0].Args
		Expect(args).To(Equal([]string{"info", "--result-file", "/dev/termination-log", "--root", "/images", "/images/base/disk.vmdk"}))
		Expect(job.Spec.Template.Spec.Containers[0].VolumeMounts[0].ReadOnly).To(BeTrue())
		finishJob(job, 0, succeeded("99999999", "ffffffff", "monolithicSparse", 1<<30))
		Eventually(func() string { return getImage(ns, "base").Status.Refreshed }, timeout, interval).Should(Equal("after-write"))
		Expect(getImage(ns, "base").Status.CID).To(Equal("99999999"))
		Eventually(eventReasons(ns, "base"), timeout, interval).Should(ContainElement(v1alpha1.EventRefreshed))
		// The child was made against the old CID: its chain is now broken.
		Eventually(condition(ns, "kid", v1alpha1.ConditionChainValid), timeout, interval).Should(HaveField("Reason", v1alpha1.ReasonParentChanged))
	})

	It("blocks deleting an image while a child needs it", func() {
		ns := newNamespace()
		readyImage(ns, "base", "11111111", v1alpha1.VMDKImageSpec{Size: gi(1)})
		readyImage(ns, "delta", "22222222", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "base"}})

		Expect(k8sClient.Delete(ctx, getImage(ns, "base"))).To(Succeed())
		Eventually(condition(ns, "base", v1alpha1.ConditionDeletionBlocked), timeout, interval).Should(
			And(Not(BeNil()), HaveField("Message", ContainSubstring("delta"))))
		Eventually(eventReasons(ns, "base"), timeout, interval).Should(ContainElement(v1alpha1.EventDeleteBlocked))
		Consistently(func() error {
			return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "base"}, &v1alpha1.VMDKImage{})
		}, 2*time.Second, interval).Should(Succeed())

		Expect(k8sClient.Delete(ctx, getImage(ns, "delta"))).To(Succeed())
		for _, name := range []string{"delta", "base"} {
			Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &v1alpha1.VMDKImage{}))
			}, timeout, interval).Should(BeTrue(), name)
		}
	})

	It("imports over HTTP and fails for good on a permanent error", func() {
		ns := newNamespace()
		sum := "sha256:" + strings.Repeat("ab", 32)
		newImage(ns, "web", v1alpha1.VMDKImageSpec{
			Subformat: v1alpha1.StreamOptimized,
			Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{
				URL: "https://disks.example/vm.ova", Checksum: sum, OVADisk: "1", CAConfigMap: "ca", SecretRef: "creds",
			}},
			Storage: v1alpha1.StorageSpec{Size: gi(2)},
		})
		job := jobOf(ns, "web")
		Eventually(phaseOfImage(ns, "web"), timeout, interval).Should(Equal(v1alpha1.PhaseImporting))
		args := job.Spec.Template.Spec.Containers[0].Args
		Expect(args[0]).To(Equal("import"))
		Expect(args).To(ContainElements("--target", "/images/web", "--target-format", "vmdk", "-o", "subformat=streamOptimized",
			"--checksum", sum, "--ova-disk", "1", "--scratch-dir", "/scratch", "--ca-file", "/etc/vmdkpop/ca/ca.crt",
			"--credentials-dir", "/etc/vmdkpop/credentials"))
		Expect(args[len(args)-1]).To(Equal("https://disks.example/vm.ova"))
		pvc := &corev1.PersistentVolumeClaim{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: getImage(ns, "web").Status.ClaimName}, pvc)).To(Succeed())
		Expect(pvc.Spec.Resources.Requests.Storage().Cmp(*gi(2))).To(BeZero())

		finishJob(job, jobapi.ExitPermanent, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonChecksumMismatch,
			Message: "the source's sha256 is 00, not the expected ab", Permanent: true})
		Eventually(phaseOfImage(ns, "web"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		ready := meta.FindStatusCondition(getImage(ns, "web").Status.Conditions, v1alpha1.ConditionReady)
		Expect(ready.Reason).To(Equal(jobapi.ReasonChecksumMismatch))
		Expect(ready.Message).To(ContainSubstring("sha256"))
		Eventually(eventReasons(ns, "web"), timeout, interval).Should(ContainElements(v1alpha1.EventImportStarted, v1alpha1.EventFailed))
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		noJob(ns, "web") // not retried
	})

	It("reports retries of transient failures, within its Job", func() {
		ns := newNamespace()
		newImage(ns, "flaky", v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "uploads", Path: "vms/disk.vmdk"}},
			Storage: v1alpha1.StorageSpec{Size: gi(2)},
		})
		job := jobOf(ns, "flaky")
		args := job.Spec.Template.Spec.Containers[0].Args
		Expect(args[len(args)-3:]).To(Equal([]string{"--root", "/source", "/source/vms/disk.vmdk"}))
		src := job.Spec.Template.Spec.Volumes[len(job.Spec.Template.Spec.Volumes)-1]
		Expect(src.PersistentVolumeClaim.ClaimName).To(Equal("uploads"))
		Expect(src.PersistentVolumeClaim.ReadOnly).To(BeTrue())

		job.Status.Failed = 1
		job.Status.StartTime = ptr.To(metav1.Now())
		Expect(k8sClient.Status().Update(ctx, job)).To(Succeed())
		Eventually(condition(ns, "flaky", v1alpha1.ConditionProgressing), timeout, interval).Should(
			HaveField("Message", ContainSubstring("retrying")))
		Expect(getImage(ns, "flaky").Status.Phase).To(Equal(v1alpha1.PhaseImporting))

	})

	It("flattens a chain once its top is Ready", func() {
		ns := newNamespace()
		readyImage(ns, "p", "11111111", v1alpha1.VMDKImageSpec{Size: gi(3)})
		readyImage(ns, "c", "22222222", v1alpha1.VMDKImageSpec{Size: gi(3), BackingImage: &v1alpha1.ImageReference{Name: "p"}})
		newImage(ns, "flat", v1alpha1.VMDKImageSpec{Subformat: v1alpha1.TwoGbMaxExtentSparse, Source: &v1alpha1.ImageSource{Image: &v1alpha1.ImageReference{Name: "c"}}})
		job := jobOf(ns, "flat")
		Eventually(phaseOfImage(ns, "flat"), timeout, interval).Should(Equal(v1alpha1.PhaseFlattening))
		ps := job.Spec.Template.Spec
		Expect(ps.Containers[0].Args).To(Equal([]string{"convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
			"--result-file", "/dev/termination-log", "--root", "/images", "/images/c/disk.vmdk", "/images/flat/disk.vmdk"}))
		var mounts []string
		for _, m := range ps.Containers[0].VolumeMounts {
			mounts = append(mounts, fmt.Sprintf("%s:%v", m.MountPath, m.ReadOnly))
		}
		Expect(mounts).To(Equal([]string{"/images/flat:false", "/images/c:true", "/images/p:true"}))
		pvc := &corev1.PersistentVolumeClaim{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: getImage(ns, "flat").Status.ClaimName}, pvc)).To(Succeed())
		Expect(pvc.Spec.Resources.Requests.Storage().Value()).To(BeNumerically(">", int64(3<<30)))
		finishJob(job, 0, succeeded("33333333", "ffffffff", "twoGbMaxExtentSparse", 3<<30))
		Eventually(phaseOfImage(ns, "flat"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
	})

	DescribeTable("CEL validation rejects bad specs with a readable message",
		func(spec v1alpha1.VMDKImageSpec, want string) {
			ns := "default"
			err := k8sClient.Create(ctx, &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-", Namespace: ns}, Spec: spec})
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), err.Error())
			Expect(err.Error()).To(ContainSubstring(want))
		},
		Entry("blank without a size", v1alpha1.VMDKImageSpec{}, "size is required for a blank image"),
		Entry("two sources", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{
			HTTP: &v1alpha1.HTTPSource{URL: "http://x/d.vmdk"}, Image: &v1alpha1.ImageReference{Name: "a"}}}, "exactly one of http, pvc, image or vsphere"),
		Entry("a flat child", v1alpha1.VMDKImageSpec{Size: gi(1), Subformat: v1alpha1.MonolithicFlat, BackingImage: &v1alpha1.ImageReference{Name: "a"}},
			"a backing image needs a sparse subformat"),
		Entry("a child with a source", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "a"},
			Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "http://x/d.vmdk"}}}, "cannot both be set"),
		Entry("an import of unknown size", v1alpha1.VMDKImageSpec{Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "http://x/d.vmdk"}}},
			"needs size or storage.size"),
		Entry("a bad subformat", v1alpha1.VMDKImageSpec{Size: gi(1), Subformat: "vmfsSparse"}, "Unsupported value"),
		Entry("a bad URL", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "ftp://x"}}}, "spec.source.http.url"),
		Entry("a bad checksum", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "http://x", Checksum: "md5:00"}}},
			"spec.source.http.checksum"),
		// imager's every-disk mode writes a directory per disk: an image
		// made from it would be Ready with no disk at its top.
		Entry("every disk of an OVA", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "http://x/vm.ova", OVADisk: "all"}}},
			"ovaDisk: an image is one disk"),
		Entry("a path out of the PVC", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "c", Path: "a/../../etc/passwd"}}},
			"path must be relative and stay inside the PVC"),
	)

	It("keeps the spec immutable except for storage.size growing", func() {
		ns := newNamespace()
		// Claims expand only through a class that allows it.
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "expandable-" + ns}, Provisioner: "example.com/csi", AllowVolumeExpansion: ptr.To(true)}
		Expect(k8sClient.Create(ctx, sc)).To(Succeed())
		newImage(ns, "fixed", v1alpha1.VMDKImageSpec{Size: gi(1), Storage: v1alpha1.StorageSpec{Size: gi(2), StorageClassName: &sc.Name}})
		for _, c := range []struct {
			mutate func(*v1alpha1.VMDKImage)
			want   string
		}{
			{func(i *v1alpha1.VMDKImage) { i.Spec.Subformat = v1alpha1.MonolithicFlat }, "subformat is immutable"},
			{func(i *v1alpha1.VMDKImage) { i.Spec.Size = gi(5) }, "size is immutable"},
			{func(i *v1alpha1.VMDKImage) { i.Spec.BackingImage = &v1alpha1.ImageReference{Name: "x"} }, "backingImage is immutable"},
			{func(i *v1alpha1.VMDKImage) { i.Spec.Storage.Size = gi(1) }, "storage.size may only grow"},
		} {
			// Retried: the controller's own updates may conflict.
			Eventually(func() string {
				img := getImage(ns, "fixed")
				c.mutate(img)
				if err := k8sClient.Update(ctx, img); err != nil {
					return err.Error()
				}
				return "accepted"
			}, timeout, interval).Should(ContainSubstring(c.want))
		}
		// Kubernetes expands bound claims only: bind it, as a provisioner would.
		Eventually(func() string { return getImage(ns, "fixed").Status.ClaimName }, timeout, interval).ShouldNot(BeEmpty())
		pvc := &corev1.PersistentVolumeClaim{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: getImage(ns, "fixed").Status.ClaimName}, pvc)).To(Succeed())
		pvc.Status.Phase = corev1.ClaimBound
		pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: *gi(2)}
		Expect(k8sClient.Status().Update(ctx, pvc)).To(Succeed())
		Eventually(func() error {
			img := getImage(ns, "fixed")
			img.Spec.Storage.Size = gi(4)
			return k8sClient.Update(ctx, img)
		}, timeout, interval).Should(Succeed())
		Eventually(func() int64 {
			pvc := &corev1.PersistentVolumeClaim{}
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: getImage(ns, "fixed").Status.ClaimName}, pvc)).To(Succeed())
			return pvc.Spec.Resources.Requests.Storage().Value()
		}, timeout, interval).Should(Equal(int64(4 << 30)))
	})
})

var _ = Describe("helpers", func() {
	DescribeTable("progressFromLog",
		func(lines []string, want string, ok bool) {
			got, gotOK := progressFromLog(lines)
			Expect(gotOK).To(Equal(ok))
			Expect(got).To(Equal(want))
		},
		Entry("none", []string{"imager: spooling"}, "", false),
		Entry("newest wins", []string{`{"progress":1,"bytesDone":1,"bytesTotal":100}`, `{"progress":42.25,"bytesDone":42,"bytesTotal":100}`, "stderr line"}, "42.2%", true),
		Entry("garbage skipped", []string{`{"progress":5}`, `{"progress": 500}`, `{"progress":`}, "5.0%", true),
	)
	It("derives names that fit a label and differ per incarnation", func() {
		a := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("x", 253), UID: "u1"}}
		b := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("x", 253), UID: "u2"}}
		Expect(len(nameFor(a, "import"))).To(BeNumerically("<=", 63))
		Expect(nameFor(a, "import")).NotTo(Equal(nameFor(b, "import")))
		Expect(nameFor(a, "import")).To(Equal(nameFor(a, "import")))
	})
	It("sizes PVCs for the whole virtual size plus overhead", func() {
		img := &v1alpha1.VMDKImage{Spec: v1alpha1.VMDKImageSpec{Size: gi(10)}}
		n := defaultClaimSize(img, 0)
		Expect(n).To(BeNumerically(">", int64(10<<30)/94*100))
		Expect(n % (1 << 20)).To(BeZero())
	})
})

var _ = Describe("config/samples", func() {
	It("are accepted by the CRD's validation", func() {
		ns := newNamespace()
		files, err := filepath.Glob(filepath.Join("..", "config", "samples", "storage_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(6))
		for _, f := range files {
			b, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			img := &v1alpha1.VMDKImage{}
			Expect(yaml.UnmarshalStrict(b, img)).To(Succeed(), f)
			img.Namespace = ns
			Expect(k8sClient.Create(context.Background(), img)).To(Succeed(), f)
		}
	})
})
