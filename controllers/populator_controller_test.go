package controllers

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The populator's envtest specs play the PV controller and scheduler,
// which envtest does not run: they bind the prime PVC to a PV, and bind the
// user's PVC once the PV's claimRef names it.

func storageClass(name string, wffc bool) string {
	mode := storagev1.VolumeBindingImmediate
	if wffc {
		mode = storagev1.VolumeBindingWaitForFirstConsumer
	}
	// Retain, as newPV's volumes: the populator sets a prime's own to Delete.
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "example.com/csi", VolumeBindingMode: &mode,
		ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimRetain)}
	Expect(client.IgnoreAlreadyExists(k8sClient.Create(context.Background(), sc))).To(Succeed())
	return name
}

func userPVC(ns, name, image, class string, size int64, block bool) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *gi(size)}},
			DataSourceRef:    &corev1.TypedObjectReference{APIGroup: ptr.To("storage.vmdkpop.io"), Kind: "VMDKImage", Name: image},
		},
	}
	if block {
		pvc.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	}
	ExpectWithOffset(1, k8sClient.Create(context.Background(), pvc)).To(Succeed())
	return pvc
}

func getPVC(ns, name string) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{}
	ExpectWithOffset(1, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, pvc)).To(Succeed())
	return pvc
}

func annotation(ns, name, key string) func() string {
	return func() string { return getPVC(ns, name).Annotations[key] }
}

// primeOf waits for the prime PVC of a user PVC.
func primeOf(user *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	prime := &corev1.PersistentVolumeClaim{}
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(context.Background(), types.NamespacedName{Namespace: user.Namespace, Name: "prime-" + string(user.UID)}, prime)
	}, timeout, interval).Should(Succeed())
	return prime
}

func populateJobOf(user *corev1.PersistentVolumeClaim) *batchv1.Job {
	job := &batchv1.Job{}
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(context.Background(), types.NamespacedName{Namespace: user.Namespace, Name: "populate-" + string(user.UID)}, job)
	}, timeout, interval).Should(Succeed())
	return job
}

func pvcEvents(ns, name string) func() []string { return eventReasons(ns, name) }

var _ = Describe("volume populator", func() {
	ctx := context.Background()

	It("fills a Filesystem PVC from a chain through a prime PVC, then hands the volume over and cleans up", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "p", "11111111", v1alpha1.VMDKImageSpec{Size: gi(1)})
		readyImage(ns, "c", "22222222", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "p"}})
		user := userPVC(ns, "vm-disk", "c", class, 2, false)
		user = getPVC(ns, "vm-disk")

		prime := primeOf(user)
		Expect(*prime.Spec.StorageClassName).To(Equal(class))
		Expect(prime.Spec.AccessModes).To(Equal(user.Spec.AccessModes))
		Expect(prime.Spec.Resources.Requests.Storage().Cmp(*gi(2))).To(BeZero())
		Expect(prime.Spec.DataSourceRef).To(BeNil())
		Expect(metav1.IsControlledBy(prime, user)).To(BeTrue())

		job := populateJobOf(user)
		Expect(metav1.IsControlledBy(job, user)).To(BeTrue())
		ps := job.Spec.Template.Spec
		Expect(ps.Containers[0].Args).To(Equal([]string{"import", "--result-file", "/dev/termination-log",
			"--target", "/target", "--target-format", "raw", "--fs-overhead", "0.06", "--root", "/images", "/images/c/disk.vmdk"}))
		var mounts []string
		for _, m := range ps.Containers[0].VolumeMounts {
			mounts = append(mounts, fmt.Sprintf("%s:%v", m.MountPath, m.ReadOnly))
		}
		Expect(mounts).To(Equal([]string{"/images/c:true", "/images/p:true", "/target:false"}))
		Expect(*ps.SecurityContext.RunAsUser).To(Equal(int64(107)))
		Expect(*ps.SecurityContext.FSGroup).To(Equal(int64(107)))
		Expect(*ps.Containers[0].SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Eventually(getPVC(ns, "vm-disk").Finalizers, timeout, interval).Should(ContainElement(v1alpha1.PopulatorFinalizer))

		pod := jobPod(job, corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":50,"bytesDone":1,"bytesTotal":2}`)
		Eventually(annotation(ns, "vm-disk", v1alpha1.AnnProgress), timeout, interval).Should(Equal("50.0%"))
		Expect(getPVC(ns, "vm-disk").Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopPopulating))
		Expect(k8sClient.Delete(ctx, pod)).To(Succeed())

		// The provisioner binds the prime PVC to a new PV.
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-" + ns},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *gi(2)},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName:              class,
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/" + ns}},
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: prime.Name, UID: prime.UID},
			},
		}
		Expect(k8sClient.Create(ctx, pv)).To(Succeed())
		prime = getPVC(ns, prime.Name)
		prime.Spec.VolumeName = pv.Name
		Expect(k8sClient.Update(ctx, prime)).To(Succeed())
		prime.Status.Phase = corev1.ClaimBound
		Expect(k8sClient.Status().Update(ctx, prime)).To(Succeed())

		finishJob(job, 0, &jobapi.Result{Phase: jobapi.Succeeded, Reason: jobapi.ReasonSucceeded, VirtualSize: 1 << 30, TargetFormat: "raw"})
		// The populator moves the PV's claimRef to the user's PVC.
		Eventually(func() types.UID {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pv), pv)).To(Succeed())
			return pv.Spec.ClaimRef.UID
		}, timeout, interval).Should(Equal(user.UID))
		Eventually(pvcEvents(ns, "vm-disk"), timeout, interval).Should(ContainElements(v1alpha1.EventPopulatorStarted, v1alpha1.EventPopulatorFinished))

		// The PV controller binds the user's PVC and loses the prime one.
		prime = getPVC(ns, prime.Name)
		prime.Status.Phase = corev1.ClaimLost
		Expect(k8sClient.Status().Update(ctx, prime)).To(Succeed())
		bindUser(ns, "vm-disk", pv.Name)

		Eventually(func() bool { return !getPVC(ns, prime.Name).DeletionTimestamp.IsZero() }, timeout, interval).Should(BeTrue())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))
		}, timeout, interval).Should(BeTrue())
		Eventually(func() []string { return getPVC(ns, "vm-disk").Finalizers }, timeout, interval).ShouldNot(ContainElement(v1alpha1.PopulatorFinalizer))
		Eventually(annotation(ns, "vm-disk", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopSucceeded))
		Expect(getPVC(ns, "vm-disk").Annotations[v1alpha1.AnnVolume]).To(Equal(pv.Name))
	})

	It("waits for WaitForFirstConsumer scheduling and pins a Block-mode Job to the selected node", func() {
		ns := newNamespace()
		class := storageClass("wffc", true)
		readyImage(ns, "img", "33333333", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "raw-disk", "img", class, 1, true)
		Eventually(annotation(ns, "raw-disk", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("WaitForFirstConsumer"))
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "prime-" + string(user.UID)}, &corev1.PersistentVolumeClaim{}))
		}, "1s", interval).Should(BeTrue())

		Eventually(func() error {
			u := getPVC(ns, "raw-disk")
			u.Annotations[annSelectedNode] = "node-1"
			return k8sClient.Update(ctx, u)
		}, timeout, interval).Should(Succeed())
		prime := primeOf(user)
		Expect(prime.Annotations[annSelectedNode]).To(Equal("node-1"))
		Expect(*prime.Spec.VolumeMode).To(Equal(corev1.PersistentVolumeBlock))
		job := populateJobOf(user)
		ps := job.Spec.Template.Spec
		Expect(ps.Containers[0].VolumeDevices).To(Equal([]corev1.VolumeDevice{{Name: "target", DevicePath: "/dev/vmdkpop-target"}}))
		Expect(ps.Containers[0].Args).To(ContainElements("--target", "/dev/vmdkpop-target"))
		term := ps.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0]
		Expect(term.MatchFields[0].Values).To(Equal([]string{"node-1"}))
	})

	It("refuses a PVC too small for the image, saying how big it must be", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "big", "44444444", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "small", "big", class, 1, false) // 1Gi cannot hold 1Gi plus filesystem overhead
		Eventually(annotation(ns, "small", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		Expect(getPVC(ns, "small").Annotations[v1alpha1.AnnMessage]).To(ContainSubstring("request at least 1107Mi"))
		Eventually(pvcEvents(ns, "small"), timeout, interval).Should(ContainElement(v1alpha1.EventPVCTooSmall))
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "prime-" + string(user.UID)}, &corev1.PersistentVolumeClaim{}))).To(BeTrue())
	})

	It("waits for a missing image, and fills several PVCs from one image at once", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		a := userPVC(ns, "a", "later", class, 2, false)
		b := userPVC(ns, "b", "later", class, 2, true)
		Eventually(annotation(ns, "a", v1alpha1.AnnMessage), timeout, interval).Should(ContainSubstring("does not exist"))
		Eventually(pvcEvents(ns, "a"), timeout, interval).Should(ContainElement(v1alpha1.EventPopulatorWaiting))
		readyImage(ns, "later", "55555555", v1alpha1.VMDKImageSpec{Size: gi(1)})
		ja, jb := populateJobOf(a), populateJobOf(b)
		Expect(ja.Name).NotTo(Equal(jb.Name))
		Expect(primeOf(a).Name).NotTo(Equal(primeOf(b).Name))
	})

	It("repeats the prime PVC's warnings on the user's PVC", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "99999999", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "warned", "img", class, 2, false)
		prime := primeOf(user)
		populateJobOf(user)
		Expect(k8sClient.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: "prime-warning"},
			InvolvedObject: corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: prime.Name, UID: prime.UID},
			Type:           corev1.EventTypeWarning, Reason: "ProvisioningFailed", Message: "out of space",
			Source: corev1.EventSource{Component: "test-provisioner"},
		})).To(Succeed())
		// A progress requeue (or any change) brings the copy.
		pod := jobPod(populateJobOf(user), corev1.PodRunning, nil)
		fakeLogs.set(pod.Name, `{"progress":10,"bytesDone":1,"bytesTotal":10}`)
		Eventually(pvcEvents(ns, "warned"), timeout, interval).Should(ContainElement("ProvisioningFailed"))
	})

	It("reports a failed population on the PVC", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "66666666", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "d", "img", class, 2, false)
		finishJob(populateJobOf(user), jobapi.ExitPermanent, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonTargetTooSmall, Message: "the volume has 1.0 GiB available", Permanent: true})
		Eventually(annotation(ns, "d", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		Expect(getPVC(ns, "d").Annotations[v1alpha1.AnnMessage]).To(HavePrefix("TargetTooSmall: "))
		Eventually(pvcEvents(ns, "d"), timeout, interval).Should(ContainElement(v1alpha1.EventPopulatorFailed))
	})

	It("says so when something else bound the PVC to an empty volume", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "88888888", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "stolen", "img", class, 2, false)
		populateJobOf(user)
		// A provisioner that ignores dataSourceRef binds it first.
		Eventually(func() error {
			u := getPVC(ns, "stolen")
			u.Spec.VolumeName = "some-empty-pv"
			return k8sClient.Update(ctx, u)
		}, timeout, interval).Should(Succeed())
		u := getPVC(ns, "stolen")
		u.Status.Phase = corev1.ClaimBound
		Expect(k8sClient.Status().Update(ctx, u)).To(Succeed())
		Eventually(annotation(ns, "stolen", v1alpha1.AnnPhase), timeout, interval).Should(Equal(v1alpha1.PopFailed))
		Expect(getPVC(ns, "stolen").Annotations[v1alpha1.AnnMessage]).To(ContainSubstring("did not fill"))
	})

	It("cleans up the prime PVC and the Job when the PVC is deleted mid-way", func() {
		ns := newNamespace()
		class := storageClass("immediate", false)
		readyImage(ns, "img", "77777777", v1alpha1.VMDKImageSpec{Size: gi(1)})
		user := userPVC(ns, "gone", "img", class, 2, false)
		prime, job := primeOf(user), populateJobOf(user)
		Expect(k8sClient.Delete(ctx, getPVC(ns, "gone"))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))
		}, timeout, interval).Should(BeTrue())
		Eventually(func() bool {
			p := &corev1.PersistentVolumeClaim{}
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(prime), p)
			return apierrors.IsNotFound(err) || !p.DeletionTimestamp.IsZero()
		}, timeout, interval).Should(BeTrue())
		Eventually(func() bool {
			p := &corev1.PersistentVolumeClaim{}
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gone"}, p)
			return apierrors.IsNotFound(err) || !strings.Contains(strings.Join(p.Finalizers, ","), v1alpha1.PopulatorFinalizer)
		}, timeout, interval).Should(BeTrue())
	})

	It("registers no VolumePopulator when the CRD is absent, and one when it is there", func() {
		Expect(RegisterVolumePopulator(ctx, k8sClient)).To(Succeed())
		vp := &unstructured.Unstructured{}
		vp.SetGroupVersionKind(volumePopulatorGVK)
		Expect(meta.IsNoMatchError(k8sClient.Get(ctx, client.ObjectKey{Name: VolumePopulatorName}, vp))).To(BeTrue())

		// The CRD as kubernetes-csi/volume-data-source-validator ships it,
		// cut to what matters here: cluster-scoped, sourceKind at the top.
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "volumepopulators.populator.storage.k8s.io",
				// *.k8s.io groups need it; the real CRD carries its KEP's.
				Annotations: map[string]string{"api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/1495"}},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: "populator.storage.k8s.io", Scope: apiextensionsv1.ClusterScoped,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "volumepopulators", Singular: "volumepopulator", Kind: "VolumePopulator", ListKind: "VolumePopulatorList"},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1beta1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: ptr.To(true),
					}}}},
			},
		}
		opts := envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}}
		_, err := envtest.InstallCRDs(testEnv.Config, opts)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(envtest.UninstallCRDs(testEnv.Config, opts)).To(Succeed()) })
		Eventually(func() error { return RegisterVolumePopulator(ctx, k8sClient) }, timeout, interval).Should(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: VolumePopulatorName}, vp)).To(Succeed())
		Expect(vp.Object["sourceKind"]).To(Equal(map[string]any{"group": "storage.vmdkpop.io", "kind": "VMDKImage"}))
		// Registering again (every manager start) changes nothing.
		rv := vp.GetResourceVersion()
		Expect(RegisterVolumePopulator(ctx, k8sClient)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: VolumePopulatorName}, vp)).To(Succeed())
		Expect(vp.GetResourceVersion()).To(Equal(rv))
	})
})
