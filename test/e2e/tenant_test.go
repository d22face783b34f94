//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/controllers"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The tenant specs play a malicious tenant: one with the rights of an
// ordinary namespace user (PVCs, Jobs and VMDKImages in its own namespace,
// ownerReferences and labels on them, annotations on its own PVCs) who
// creates, under the names the controller will use, objects the
// controller did not make, so that the controller acts on them with its
// cluster-wide rights. vmdkpop must refuse them: event reason
// ForeignObject, and the population or the image fails.

const (
	// reasonForeign is the refusal's event and condition reason.
	reasonForeign = "ForeignObject"
	// notOurs is what the refusal's message says.
	notOurs = "not created by vmdkpop"
	// annSelectedNode is the scheduler's WaitForFirstConsumer annotation,
	// which a tenant may set on its own PVC.
	annSelectedNode = "volume.kubernetes.io/selected-node"
	// MiB: room for the 16 MiB disk by jobapi.RequiredBytes (35Mi), so
	// that the populator gets as far as the forged objects.
	tenantPVCSize = 64
	sourceSize    = 16 << 20
	// settle is how long a safe outcome must hold once reached.
	settle = 25 * time.Second
)

// tenantNamespace makes a fresh namespace for one spec, deleted after it
// (unless E2E_KEEP is set), with the usual dump when the spec failed.
func tenantNamespace(name string) string {
	GinkgoHelper()
	exec.Command(kubectl, "delete", "namespace", name, "--wait=true", "--timeout=120s").Run()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			dump(name)
		}
		if os.Getenv("E2E_KEEP") == "" {
			exec.Command(kubectl, "delete", "namespace", name, "--wait=true", "--timeout=120s").Run()
		}
	})
	return name
}

// hardenedPodSpec is the pod spec of a non-root imager container running
// args (as the suite's other pods and vmdkpop's own Jobs run).
func hardenedPodSpec(uid int64, args []string, vols ...podVolume) corev1.PodSpec {
	spec := corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(uid), RunAsGroup: ptr.To(uid), FSGroup: ptr.To(uid),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name: "imager", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/imager"}, Args: args,
			SecurityContext: &corev1.SecurityContext{
				ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
	c := &spec.Containers[0]
	for i, v := range vols {
		vn := "v" + strconv.Itoa(i)
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: vn, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.claim, ReadOnly: v.readOnly}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: vn, MountPath: v.path, ReadOnly: v.readOnly})
	}
	return spec
}

// podIn runs imager with args in a pod of namespace ns and returns the
// result it wrote to its termination message.
func podIn(ns, name string, args []string, vols ...podVolume) *jobapi.Result {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hardenedPodSpec(imagerUID, append(args, "--result-file", "/dev/termination-log"), vols...),
	}
	return runToResult(pod)
}

// ownedBy is a controller reference to owner, as vmdkpop sets on its
// children (and as anyone may set on objects of their own).
func ownedBy(apiVersion, kind string, owner client.Object) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: ptr.To(true)}}
}

// forgeJob creates a Job of the tenant's, named and labelled as vmdkpop
// names and labels its own, and waits until it has succeeded.
func forgeJob(ns, name string, labels map[string]string, owners []metav1.OwnerReference, args []string, vols ...podVolume) *batchv1.Job {
	GinkgoHelper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, OwnerReferences: owners},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       hardenedPodSpec(imagerUID, args, vols...),
			},
		},
	}
	Expect(k8s.Create(ctx, job)).To(Succeed())
	Eventually(func() bool {
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			if c.Type == batchv1.JobFailed {
				StopTrying(fmt.Sprintf("forged Job %s failed: %s", name, c.Message)).Now()
			}
			if c.Type == batchv1.JobComplete {
				return true
			}
		}
		return false
	}, timeout, time.Second).Should(BeTrue(), "forged Job %s completes", name)
	return job
}

func getPVC(ns, name string) *corev1.PersistentVolumeClaim {
	GinkgoHelper()
	pvc := &corev1.PersistentVolumeClaim{}
	Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pvc)).To(Succeed())
	return pvc
}

func getPV(name string) *corev1.PersistentVolume {
	GinkgoHelper()
	pv := &corev1.PersistentVolume{}
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, pv)).To(Succeed())
	return pv
}

func imageIn(ns, name string) *v1alpha1.VMDKImage {
	GinkgoHelper()
	img := &v1alpha1.VMDKImage{}
	Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, img)).To(Succeed())
	return img
}

func createImageIn(ns, name string, spec v1alpha1.VMDKImageSpec) *v1alpha1.VMDKImage {
	GinkgoHelper()
	img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	Expect(k8s.Create(ctx, img)).To(Succeed())
	return img
}

func waitReady(ns, name string) {
	GinkgoHelper()
	Eventually(func() v1alpha1.Phase {
		img := imageIn(ns, name)
		if img.Status.Phase == v1alpha1.PhaseFailed {
			StopTrying(fmt.Sprintf("image %s failed: %+v", name, img.Status.Conditions)).Now()
		}
		return img.Status.Phase
	}, timeout, time.Second).Should(Equal(v1alpha1.PhaseReady), name)
}

// warnings lists the Warning events with reason about one object.
func warnings(ns, kind, name string, uid types.UID, reason string) []string {
	GinkgoHelper()
	list := &corev1.EventList{}
	Expect(k8s.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		o := e.InvolvedObject
		if e.Type == corev1.EventTypeWarning && e.Reason == reason && o.Kind == kind && o.Name == name && o.UID == uid {
			out = append(out, e.Message)
		}
	}
	return out
}

// nodeName is the (single) node's name, which a tenant can read off any
// of its scheduled pods.
func nodeName() string {
	GinkgoHelper()
	nodes := &corev1.NodeList{}
	Expect(k8s.List(ctx, nodes)).To(Succeed())
	Expect(nodes.Items).NotTo(BeEmpty())
	return nodes.Items[0].Name
}

// tenantPVC is a PVC to be filled from the VMDKImage source, already
// annotated with the node a consumer pod would be scheduled to.
func tenantPVC(ns, name, source, node string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{annSelectedNode: node}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:    ptr.To(corev1.PersistentVolumeFilesystem),
			Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *mib(tenantPVCSize)}},
			DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptr.To(v1alpha1.GroupVersion.Group), Kind: "VMDKImage", Name: source},
		},
	}
}

// populationDecided waits until the populator has settled a PVC one way
// or the other: Failed, Succeeded, or the PVC bound.
func populationDecided(ns, name string) *corev1.PersistentVolumeClaim {
	GinkgoHelper()
	var pvc *corev1.PersistentVolumeClaim
	Eventually(func() bool {
		pvc = getPVC(ns, name)
		phase := pvc.Annotations[v1alpha1.AnnPhase]
		return phase == v1alpha1.PopFailed || phase == v1alpha1.PopSucceeded || pvc.Spec.VolumeName != ""
	}, 2*time.Minute, time.Second).Should(BeTrue(), "PVC %s/%s: the populator decides", ns, name)
	return pvc
}

func describePVC(pvc *corev1.PersistentVolumeClaim) string {
	return fmt.Sprintf("PVC %s/%s (uid %s): status %s, volume %q, %s=%q, %s=%q, %s=%q", pvc.Namespace, pvc.Name, pvc.UID,
		pvc.Status.Phase, pvc.Spec.VolumeName, v1alpha1.AnnPhase, pvc.Annotations[v1alpha1.AnnPhase],
		v1alpha1.AnnMessage, pvc.Annotations[v1alpha1.AnnMessage], v1alpha1.AnnVolume, pvc.Annotations[v1alpha1.AnnVolume])
}

// expectRefused checks the populator's refusal on a tenant's PVC: phase
// Failed, the message, and the ForeignObject warning.
func expectRefused(pvc *corev1.PersistentVolumeClaim) {
	GinkgoHelper()
	Expect(pvc.Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopFailed), "%s", describePVC(pvc))
	Expect(pvc.Annotations[v1alpha1.AnnMessage]).To(ContainSubstring(notOurs), "%s", describePVC(pvc))
	Eventually(func() []string {
		return warnings(pvc.Namespace, "PersistentVolumeClaim", pvc.Name, pvc.UID, reasonForeign)
	}, 30*time.Second, time.Second).ShouldNot(BeEmpty(), "a Warning %s event on PVC %s", reasonForeign, pvc.Name)
}

// childName is the name vmdkpop gives an image's PVC or Job (its
// hashedName): the image's name, the kind, and 8 hex digits of the
// sha256 of the image's UID. Anyone who can read the image can compute it.
func childName(img *v1alpha1.VMDKImage, kind string) string {
	sum := sha256.Sum256([]byte(img.UID))
	suffix := "-" + kind + "-" + hex.EncodeToString(sum[:])[:8]
	base := img.Name
	if len(base)+len(suffix) > 63 {
		base = strings.TrimRight(base[:63-len(suffix)], "-.")
	}
	return base + suffix
}

var _ = Describe("a malicious tenant", func() {
	It("cannot take over another namespace's PV with a forged prime PVC and populate Job", func() {
		victimNS := tenantNamespace("vmdkpop-e2e-victim")
		ns := tenantNamespace("vmdkpop-e2e-tenant-pv")

		By("the victim: a PVC bound to a local PV holding known data")
		victim := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: victimNS, Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *mib(tenantPVCSize)}},
			},
		}
		Expect(k8s.Create(ctx, victim)).To(Succeed())
		podIn(victimNS, "write-marker", []string{"create", "-q", "/data/marker.vmdk", "1M"}, podVolume{claim: "data", path: "/data"})
		podIn(victimNS, "write-pattern", []string{"write", "-P", "90", "0", "64k", "/data/marker.vmdk"}, podVolume{claim: "data", path: "/data"})
		marker := make([]byte, 1<<20)
		for i := range 64 << 10 {
			marker[i] = 90
		}
		victim = getPVC(victimNS, "data")
		Expect(victim.Status.Phase).To(Equal(corev1.ClaimBound))
		Expect(victim.Spec.StorageClassName).NotTo(BeNil())
		victimPV := victim.Spec.VolumeName
		fmt.Fprintf(GinkgoWriter, "victim: %s\n", describePVC(victim))

		By("the tenant: PVC x from a VMDKImage that does not exist yet")
		x := tenantPVC(ns, "x", "takeover-src", nodeName())
		Expect(k8s.Create(ctx, x)).To(Succeed())
		uid := string(x.UID)
		Expect(uid).NotTo(BeEmpty())

		By("the tenant: a forged prime PVC naming the victim's PV, and a forged populate Job that just succeeds")
		labels := map[string]string{v1alpha1.LabelPopulates: uid}
		owners := ownedBy("v1", "PersistentVolumeClaim", x)
		prime := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prime-" + uid, Labels: labels, OwnerReferences: owners},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: victim.Spec.StorageClassName,
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				VolumeMode:       ptr.To(corev1.PersistentVolumeFilesystem),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *mib(tenantPVCSize)}},
				VolumeName:       victimPV,
			},
		}
		Expect(k8s.Create(ctx, prime)).To(Succeed())
		forgeJob(ns, "populate-"+uid, labels, owners, []string{"--help"})

		By("the tenant: the VMDKImage, so that the populator goes on")
		createImageIn(ns, "takeover-src", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(sourceSize, resource.BinarySI)})
		waitReady(ns, "takeover-src")
		x = populationDecided(ns, "x")
		pv := getPV(victimPV)
		fmt.Fprintf(GinkgoWriter, "tenant: %s\nvictim: %s\nvictim PV %s claimRef: %+v\n",
			describePVC(x), describePVC(getPVC(victimNS, "data")), victimPV, pv.Spec.ClaimRef)

		By("the victim's PV still belongs to the victim, and the victim's PVC stays bound to it")
		victimHolds := func(g Gomega) {
			pv := getPV(victimPV)
			g.Expect(pv.Spec.ClaimRef).NotTo(BeNil())
			g.Expect(*pv.Spec.ClaimRef).To(And(HaveField("Namespace", victimNS), HaveField("Name", "data"), HaveField("UID", victim.UID)),
				"the victim's PV %s was handed to another claim", victimPV)
			v := getPVC(victimNS, "data")
			g.Expect(v.Status.Phase).To(Equal(corev1.ClaimBound), "%s", describePVC(v))
			g.Expect(v.Spec.VolumeName).To(Equal(victimPV))
			t := getPVC(ns, "x")
			g.Expect(t.Spec.VolumeName).NotTo(Equal(victimPV), "the tenant's PVC got the victim's PV: %s", describePVC(t))
			g.Expect(t.Annotations[v1alpha1.AnnVolume]).NotTo(Equal(victimPV), "%s", describePVC(t))
		}
		victimHolds(Default)
		Consistently(victimHolds, settle, time.Second).Should(Succeed())

		By("the tenant's PVC is refused")
		expectRefused(getPVC(ns, "x"))

		By("the victim's data is intact")
		r := podIn(victimNS, "read-marker", []string{"checksum", "/data/marker.vmdk"}, podVolume{claim: "data", path: "/data", readOnly: true})
		Expect(r.SHA256).To(Equal(sha(marker)))
	})

	It("cannot have its PVC populated by a forged populate Job", func() {
		ns := tenantNamespace("vmdkpop-e2e-tenant-job")

		By("the tenant: PVC x from a VMDKImage that does not exist yet")
		x := tenantPVC(ns, "x", "forged-job-src", nodeName())
		Expect(k8s.Create(ctx, x)).To(Succeed())
		uid := string(x.UID)
		Expect(uid).NotTo(BeEmpty())

		By("the tenant: a forged populate Job that succeeds without writing anything")
		forgeJob(ns, "populate-"+uid, map[string]string{v1alpha1.LabelPopulates: uid}, ownedBy("v1", "PersistentVolumeClaim", x), []string{"--help"})

		By("the tenant: the VMDKImage, so that the populator goes on (and makes a genuine prime PVC)")
		createImageIn(ns, "forged-job-src", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(sourceSize, resource.BinarySI)})
		waitReady(ns, "forged-job-src")
		x = populationDecided(ns, "x")
		fmt.Fprintf(GinkgoWriter, "tenant: %s\n", describePVC(x))

		notHandedOver := func(g Gomega) {
			t := getPVC(ns, "x")
			g.Expect(t.Spec.VolumeName == "" || t.Annotations[v1alpha1.AnnVolume] != t.Spec.VolumeName).To(BeTrue(),
				"vmdkpop handed the tenant's PVC a volume its forged Job 'populated': %s", describePVC(t))
			g.Expect(t.Annotations[v1alpha1.AnnPhase]).NotTo(Equal(v1alpha1.PopSucceeded), "%s", describePVC(t))
		}
		By("the PVC is not handed a volume the forged Job 'populated'")
		notHandedOver(Default)

		By("the PVC is refused")
		expectRefused(x)
		Consistently(notHandedOver, settle, time.Second).Should(Succeed())
		Expect(getPVC(ns, "x").Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopFailed))
	})

	It("cannot make a VMDKImage Ready with a forged image PVC and Job", func() {
		ns := tenantNamespace("vmdkpop-e2e-tenant-image")

		By("the tenant: a child image whose backing image does not exist yet, so the controller waits")
		child := createImageIn(ns, "forged-child", v1alpha1.VMDKImageSpec{
			Size: resource.NewQuantity(sourceSize, resource.BinarySI), BackingImage: &v1alpha1.ImageReference{Name: "forged-parent"},
		})
		Eventually(func() *metav1.Condition {
			return meta.FindStatusCondition(imageIn(ns, "forged-child").Status.Conditions, v1alpha1.ConditionReady)
		}, timeout, time.Second).Should(And(Not(BeNil()), HaveField("Reason", v1alpha1.ReasonWaitingForBacking)))
		child = imageIn(ns, "forged-child")
		diskName, jobName := childName(child, "disk"), childName(child, string(controllers.OpCreate))
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: diskName}, &corev1.PersistentVolumeClaim{}))).To(BeTrue(),
			"the controller made PVC %s already", diskName)
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: jobName}, &batchv1.Job{}))).To(BeTrue(),
			"the controller made Job %s already", jobName)

		By("the tenant: a forged PVC " + diskName + " and a forged Job " + jobName + " that writes a disk of its own and reports success")
		labels := map[string]string{v1alpha1.LabelImage: child.Name}
		owners := ownedBy(v1alpha1.GroupVersion.String(), "VMDKImage", child)
		Expect(k8s.Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: diskName, Labels: labels, OwnerReferences: owners},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *mib(64)}},
			},
		})).To(Succeed())
		forgeJob(ns, jobName, labels, owners, []string{"create", "-q", "--result-file", "/dev/termination-log", "--root", "/images",
			"-o", "subformat=monolithicSparse", "/images/forged-child/disk.vmdk", strconv.Itoa(sourceSize)},
			podVolume{claim: diskName, path: "/images/forged-child"})
		forgedPVC, forgedJob := getPVC(ns, diskName), &batchv1.Job{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: jobName}, forgedJob)).To(Succeed())

		By("the tenant: the backing image, so that the controller goes on")
		createImageIn(ns, "forged-parent", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(sourceSize, resource.BinarySI)})
		waitReady(ns, "forged-parent")

		By("the child is refused, not made Ready from the forged objects")
		Eventually(func() *metav1.Condition {
			img := imageIn(ns, "forged-child")
			if img.Status.Phase == v1alpha1.PhaseReady {
				StopTrying(fmt.Sprintf("image forged-child became Ready from the forged PVC %s and Job %s: claim %s, job %s, CID %s, parentCID %s, conditions %+v",
					diskName, jobName, img.Status.ClaimName, img.Status.JobName, img.Status.CID, img.Status.ParentCID, img.Status.Conditions)).Now()
			}
			return meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
		}, 2*time.Minute, time.Second).Should(And(Not(BeNil()), HaveField("Status", metav1.ConditionFalse), HaveField("Reason", reasonForeign)))
		Eventually(func() []string {
			return warnings(ns, "VMDKImage", child.Name, child.UID, reasonForeign)
		}, 30*time.Second, time.Second).ShouldNot(BeEmpty(), "a Warning %s event on VMDKImage %s", reasonForeign, child.Name)

		By("the forged objects are left as they were")
		Consistently(func(g Gomega) {
			pvc := &corev1.PersistentVolumeClaim{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(forgedPVC), pvc)).To(Succeed())
			g.Expect(pvc.UID).To(Equal(forgedPVC.UID))
			g.Expect(pvc.DeletionTimestamp).To(BeNil())
			g.Expect(pvc.OwnerReferences).To(Equal(forgedPVC.OwnerReferences))
			g.Expect(pvc.Labels).To(Equal(forgedPVC.Labels))
			g.Expect(pvc.Spec.Resources).To(Equal(forgedPVC.Spec.Resources))
			job := &batchv1.Job{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(forgedJob), job)).To(Succeed())
			g.Expect(job.UID).To(Equal(forgedJob.UID))
			g.Expect(job.DeletionTimestamp).To(BeNil())
			g.Expect(job.OwnerReferences).To(Equal(forgedJob.OwnerReferences))
			g.Expect(job.Labels).To(Equal(forgedJob.Labels))
			g.Expect(job.Spec.Template.Spec.Containers[0].Args).To(Equal(forgedJob.Spec.Template.Spec.Containers[0].Args))
		}, 10*time.Second, time.Second).Should(Succeed())
	})
})
