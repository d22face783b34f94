package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// spec.source.vsphere: what admission refuses, the import Job the
// controller makes of it (imager's --vsphere-* flags, the Secret and
// ConfigMap mounted), and status from the Job's result.

const (
	vcURL   = "https://vcenter.example.com/sdk"
	vmUUID  = "4211a0c9-3b2f-9a5e-1c4d-0f6e8a7b9c01"
	sha1Hex = "0123456789abcdef0123456789ABCDEF01234567"
)

// sha256Colons is a SHA-256 thumbprint as vSphere shows it.
var sha256Colons = strings.TrimSuffix(strings.Repeat("AB:", 32), ":")

// vsphereImage is an import of v into an image of 1Gi.
func vsphereImage(v v1alpha1.VSphereSource) v1alpha1.VMDKImageSpec {
	return v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{VSphere: &v}}
}

var _ = Describe("vSphere source", func() {
	ctx := context.Background()

	It("makes an import Job with the VM, disk, snapshot and transport as --vsphere-* flags and the Secret and ConfigMap mounted", func() {
		ns := newNamespace()
		newImage(ns, "by-uuid", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", Thumbprint: sha256Colons, UUID: vmUUID}))
		newImage(ns, "by-path", v1alpha1.VMDKImageSpec{
			Subformat: v1alpha1.StreamOptimized,
			Source: &v1alpha1.ImageSource{VSphere: &v1alpha1.VSphereSource{URL: "https://esxi01.example.com", SecretRef: "esxi", CAConfigMap: "esxi-ca",
				InventoryPath: "/ha-datacenter/vm/web 01", DiskLabel: "Hard disk 2", Snapshot: "before upgrade", Transport: v1alpha1.TransportNFC}},
			Storage: v1alpha1.StorageSpec{Size: gi(3)},
		})
		newImage(ns, "by-moref", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", MoRef: "vm-42", DiskIndex: ptr.To[int32](3),
			Snapshot: "snapshot-12", Transport: v1alpha1.TransportDatastore}))

		head := func(name string, more ...string) []string {
			return append([]string{"import", "--result-file", "/dev/termination-log", "--target", "/images/" + name, "--target-format", "vmdk"}, more...)
		}
		want := map[string][]string{
			// The CRD's default transport is passed on: the Job says what it does.
			"by-uuid": append(head("by-uuid", "-o", "subformat=monolithicSparse", "--size", "1073741824", "--credentials-dir", "/etc/vmdkpop/credentials"),
				"--vsphere-url", vcURL, "--vsphere-thumbprint", sha256Colons, "--vsphere-uuid", vmUUID, "--vsphere-transport", "datastore"),
			// No spec.size: imager takes the disk's own.
			"by-path": append(head("by-path", "-o", "subformat=streamOptimized", "--ca-file", "/etc/vmdkpop/ca/ca.crt", "--credentials-dir", "/etc/vmdkpop/credentials"),
				"--vsphere-url", "https://esxi01.example.com", "--vsphere-path", "/ha-datacenter/vm/web 01", "--vsphere-disk-label", "Hard disk 2",
				"--vsphere-snapshot", "before upgrade", "--vsphere-transport", "nfc"),
			"by-moref": append(head("by-moref", "-o", "subformat=monolithicSparse", "--size", "1073741824", "--credentials-dir", "/etc/vmdkpop/credentials"),
				"--vsphere-url", vcURL, "--vsphere-moref", "vm-42", "--vsphere-disk-index", "3", "--vsphere-snapshot", "snapshot-12", "--vsphere-transport", "datastore"),
		}
		base := DefaultImagerConfig().Resources.Limits[corev1.ResourceEphemeralStorage]
		for name, args := range want {
			job := jobOf(ns, name)
			Eventually(phaseOfImage(ns, name), timeout, interval).Should(Equal(v1alpha1.PhaseImporting), name)
			c := job.Spec.Template.Spec.Containers[0]
			// Exactly these: no positional source, no scratch directory.
			Expect(c.Args).To(Equal(args), name)

			volumes := map[string]corev1.Volume{}
			for _, v := range job.Spec.Template.Spec.Volumes {
				volumes[v.Name] = v
			}
			mounts := map[string]corev1.VolumeMount{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m
			}
			// Both transports read in place or as a stream: nothing spools
			// to the node's disk, and its limit is not raised.
			Expect(volumes).NotTo(HaveKey("scratch"), name)
			limit := c.Resources.Limits[corev1.ResourceEphemeralStorage]
			Expect(limit.Cmp(base)).To(BeZero(), name)

			secret := volumes["credentials"].Secret
			Expect(secret).NotTo(BeNil(), name)
			Expect(secret.SecretName).To(Equal(map[string]string{"by-uuid": "vc", "by-path": "esxi", "by-moref": "vc"}[name]))
			// Only the keys vSphere logs in with.
			Expect(secret.Items).To(Equal([]corev1.KeyToPath{{Key: "username", Path: "username"}, {Key: "password", Path: "password"}}), name)
			Expect(mounts["credentials"]).To(Equal(corev1.VolumeMount{Name: "credentials", MountPath: "/etc/vmdkpop/credentials", ReadOnly: true}), name)
			if name != "by-path" {
				Expect(volumes).NotTo(HaveKey("ca"), name)
				continue
			}
			Expect(volumes["ca"].ConfigMap).NotTo(BeNil())
			Expect(volumes["ca"].ConfigMap.Name).To(Equal("esxi-ca"))
			Expect(volumes["ca"].ConfigMap.Items).To(Equal([]corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}))
			Expect(mounts["ca"]).To(Equal(corev1.VolumeMount{Name: "ca", MountPath: "/etc/vmdkpop/ca", ReadOnly: true}))
		}
		// The PVC is sized as for any import: from spec.size, else storage.size.
		Expect(claimOf(ns, "by-path").Spec.Resources.Requests.Storage().Cmp(*gi(3))).To(BeZero())
		Expect(claimOf(ns, "by-uuid").Spec.Resources.Requests.Storage().Value()).To(Equal(jobapi.RequiredBytes(1<<30, jobapi.Filesystem)))
	})

	It("records what was read in status.vsphere, and keeps it when status is rebuilt from the PVC", func() {
		ns := newNamespace()
		newImage(ns, "web01", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", UUID: vmUUID, Snapshot: "before-upgrade"}))
		res := succeeded("5eed5eed", "ffffffff", "monolithicSparse", 1<<30)
		res.VSphere = &jobapi.VSphereResult{VMName: "web01", DiskLabel: "Hard disk 1", CapacityBytes: 1 << 30,
			BackingFiles: []string{"[datastore1] web01/web01-000001.vmdk", "[datastore1] web01/web01.vmdk"},
			Snapshot:     "before-upgrade (snapshot-12)", Transport: jobapi.TransportDatastore}
		finishJob(jobOf(ns, "web01"), 0, res)
		Eventually(phaseOfImage(ns, "web01"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		want := &v1alpha1.VSphereStatus{VMName: "web01", DiskLabel: "Hard disk 1", CapacityBytes: 1 << 30,
			BackingFiles: []string{"[datastore1] web01/web01-000001.vmdk", "[datastore1] web01/web01.vmdk"},
			Snapshot:     "before-upgrade (snapshot-12)", Transport: "datastore"}
		img := getImage(ns, "web01")
		Expect(img.Status.VSphere).To(Equal(want))
		Expect(img.Status.CID).To(Equal("5eed5eed"))
		ready := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
		Expect(ready.Message).To(Equal("monolithicSparse image, CID 5eed5eed from Hard disk 1 of VM web01 at snapshot before-upgrade (snapshot-12)"))

		// Job gone (TTL), then status lost: rebuilt from the PVC's
		// record, status.vsphere too.
		Expect(k8sClient.Delete(ctx, jobOf(ns, "web01"), client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "web01")) }, timeout, interval).Should(BeZero())
		wipeStatus(ns, "web01")
		Eventually(phaseOfImage(ns, "web01"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "web01").Status.VSphere).To(Equal(want))

		// An image from elsewhere has none.
		readyImage(ns, "blank", "11111111", v1alpha1.VMDKImageSpec{Size: gi(1)})
		Expect(getImage(ns, "blank").Status.VSphere).To(BeNil())
	})

	It("fails for good with imager's reason and message on a permanent failure, and is not retried", func() {
		ns := newNamespace()
		newImage(ns, "denied", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", UUID: vmUUID}))
		job := jobOf(ns, "denied")
		msg := "vSphere login to vcenter.example.com as administrator@vsphere.local: incorrect user name or password: fix the username and password in Secret vc"
		finishJob(job, jobapi.ExitPermanent, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonUnauthorized, Message: msg, Permanent: true})
		Eventually(phaseOfImage(ns, "denied"), timeout, interval).Should(Equal(v1alpha1.PhaseFailed))
		img := getImage(ns, "denied")
		ready := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
		Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		Expect(ready.Reason).To(Equal(jobapi.ReasonUnauthorized))
		Expect(ready.Message).To(Equal(msg))
		Expect(img.Status.LastError).To(Equal(jobapi.ReasonUnauthorized + ": " + msg))
		Expect(img.Status.Retries).To(BeZero())
		Expect(img.Status.VSphere).To(BeNil())
		Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		noJob(ns, "denied")
		Expect(getImage(ns, "denied").Status.Phase).To(Equal(v1alpha1.PhaseFailed))
	})

	It("shows a transient failure's reason and message on Ready while the retry waits", func() {
		ns := newNamespace()
		newImage(ns, "running", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", MoRef: "vm-7"}))
		msg := "VM web01 (vm-7) is powered on and no snapshot was named: name a snapshot in spec.source.vsphere.snapshot, or power the VM off"
		finishJob(jobOf(ns, "running"), jobapi.ExitTransient, &jobapi.Result{Phase: jobapi.Failed, Reason: jobapi.ReasonSourceInUse, Message: msg})
		// Both read at once: the retry starts a new attempt 2 s later.
		Eventually(func() []string {
			img := getImage(ns, "running")
			ready := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady)
			progressing := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionProgressing)
			if ready == nil || progressing == nil {
				return nil
			}
			return []string{string(ready.Status), ready.Reason, ready.Message, progressing.Reason}
		}, timeout, interval).Should(Equal([]string{"False", jobapi.ReasonSourceInUse, msg + " (gave up after 1 attempts)", v1alpha1.ReasonRetryScheduled}))
	})

	It("keeps the source immutable", func() {
		ns := newNamespace()
		newImage(ns, "fixed", vsphereImage(v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", UUID: vmUUID}))
		Eventually(func() string {
			img := getImage(ns, "fixed")
			img.Spec.Source.VSphere.Snapshot = "later"
			return errString(k8sClient.Update(ctx, img))
		}, timeout, interval).Should(ContainSubstring("source is immutable"))
	})

	It("takes jobapi's transports as the CRD's enum, passed to imager unchanged", func() {
		Expect(string(v1alpha1.TransportDatastore)).To(Equal(jobapi.TransportDatastore))
		Expect(string(v1alpha1.TransportNFC)).To(Equal(jobapi.TransportNFC))
		b, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "storage.vmdkpop.io_vmdkimages.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var crd struct {
			Spec struct {
				Versions []map[string]any `json:"versions"`
			} `json:"spec"`
		}
		Expect(yaml.Unmarshal(b, &crd)).To(Succeed())
		Expect(crd.Spec.Versions).To(HaveLen(1))
		enum, found, err := unstructured.NestedStringSlice(crd.Spec.Versions[0], "schema", "openAPIV3Schema", "properties", "spec",
			"properties", "source", "properties", "vsphere", "properties", "transport", "enum")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(BeTrue())
		Expect(enum).To(ConsistOf(jobapi.TransportDatastore, jobapi.TransportNFC))
	})

	It("refuses an image naming a Secret or ConfigMap its creator may not read", func() {
		applyAdmissionPolicies()
		ns := newNamespace()
		images := rbacv1.PolicyRule{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"vmdkimages"}, Verbs: []string{"create", "get"}}
		tenant := tenantClient(ns, "vs-tenant", images)
		create := func(name string, v v1alpha1.VSphereSource) error {
			return tenant.Create(ctx, &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: vsphereImage(v)})
		}
		Eventually(untilRefused(func(name string) error {
			return create(name, v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vcenter-admin", UUID: vmUUID})
		}), timeout, interval).Should(ContainSubstring("source.vsphere.secretRef: you may not read Secret vcenter-admin yourself"))

		// Allowed that Secret, not the ConfigMap.
		Expect(k8sClient.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-vc"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"vc"}, Verbs: []string{"get"}}}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-vc"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-vc"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "vs-tenant"}}})).To(Succeed())
		Eventually(func() error { return create("mine", v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", UUID: vmUUID}) }, timeout, interval).Should(Succeed())
		Expect(errString(create("ca", v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", CAConfigMap: "vcenter-ca", UUID: vmUUID}))).To(
			ContainSubstring("source.vsphere.caConfigMap: you may not read ConfigMap vcenter-ca yourself"))
	})
})

var _ = Describe("vSphere source validation", func() {
	ctx := context.Background()
	ok := v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", UUID: vmUUID}
	with := func(change func(*v1alpha1.VSphereSource)) v1alpha1.VMDKImageSpec {
		v := ok
		change(&v)
		return vsphereImage(v)
	}
	var ns string
	BeforeEach(func() { ns = newNamespace() })
	create := func(spec v1alpha1.VMDKImageSpec) (*v1alpha1.VMDKImage, error) {
		img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{GenerateName: "vs-", Namespace: ns}, Spec: spec}
		return img, k8sClient.Create(ctx, img)
	}

	DescribeTable("refuses what could never work, saying what to set",
		func(spec v1alpha1.VMDKImageSpec, wants ...string) {
			_, err := create(spec)
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), err.Error())
			for _, want := range wants {
				Expect(err.Error()).To(ContainSubstring(want))
			}
		},
		Entry("no VM selector", with(func(v *v1alpha1.VSphereSource) { v.UUID = "" }), "name the VM by exactly one of uuid, inventoryPath or moref"),
		Entry("two VM selectors", with(func(v *v1alpha1.VSphereSource) { v.MoRef = "vm-42" }), "name the VM by exactly one of uuid, inventoryPath or moref"),
		Entry("three VM selectors", with(func(v *v1alpha1.VSphereSource) { v.MoRef, v.InventoryPath = "vm-42", "/dc/vm/a" }), "name the VM by exactly one"),
		Entry("both disk selectors", with(func(v *v1alpha1.VSphereSource) { v.DiskIndex, v.DiskLabel = ptr.To[int32](0), "Hard disk 1" }),
			"name the disk by diskIndex or diskLabel, not both"),
		Entry("a negative disk index", with(func(v *v1alpha1.VSphereSource) { v.DiskIndex = ptr.To[int32](-1) }), "spec.source.vsphere.diskIndex", "greater than or equal to 0"),
		Entry("both thumbprint and caConfigMap", with(func(v *v1alpha1.VSphereSource) { v.Thumbprint, v.CAConfigMap = sha1Hex, "ca" }),
			"trust the server by thumbprint or caConfigMap, not both"),
		Entry("an http:// URL", with(func(v *v1alpha1.VSphereSource) { v.URL = "http://vcenter.example.com/sdk" }), "spec.source.vsphere.url", "url must start with https://"),
		Entry("a URL with credentials", with(func(v *v1alpha1.VSphereSource) { v.URL = "https://root:secret@esxi01/sdk" }), "url must not hold credentials"),
		Entry("a thumbprint one byte short", with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = sha1Hex[:38] }), "spec.source.vsphere.thumbprint", "SHA-1 (20 bytes) or SHA-256 (32 bytes)"),
		Entry("a thumbprint with colons here and there", with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = "AB:" + strings.Repeat("CD", 19) }), "SHA-1 (20 bytes) or SHA-256"),
		Entry("a thumbprint that is not hex", with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = strings.Repeat("g", 40) }), "SHA-1 (20 bytes) or SHA-256"),
		Entry("a thumbprint of another hash (SHA-512)", with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = strings.Repeat("ab", 64) }), "spec.source.vsphere.thumbprint"),
		Entry("an empty secretRef", with(func(v *v1alpha1.VSphereSource) { v.SecretRef = "" }), "spec.source.vsphere.secretRef"),
		Entry("a UUID that is not one", with(func(v *v1alpha1.VSphereSource) { v.UUID = "42 11 a0 c9" }), "uuid must be the VM's BIOS or instance UUID"),
		Entry("a VM name as moref", with(func(v *v1alpha1.VSphereSource) { v.UUID, v.MoRef = "", "web01" }), "moref must be the VM's managed object ID"),
		Entry("a relative inventory path", with(func(v *v1alpha1.VSphereSource) { v.UUID, v.InventoryPath = "", "dc/vm/web01" }), "inventoryPath must be the VM's path from the inventory root"),
		Entry("an unknown transport", with(func(v *v1alpha1.VSphereSource) { v.Transport = "vddk" }), `spec.source.vsphere.transport: Unsupported value: "vddk"`),
		Entry("vsphere and http", v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{VSphere: &ok, HTTP: &v1alpha1.HTTPSource{URL: "https://x/d.vmdk"}}},
			"source: set exactly one of http, pvc, image or vsphere"),
		Entry("no size", v1alpha1.VMDKImageSpec{Source: &v1alpha1.ImageSource{VSphere: &ok}}, "needs size or storage.size"),
	)

	It("refuses a vsphere source without secretRef", func() {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"size": "1Gi", "source": map[string]any{
			"vsphere": map[string]any{"url": vcURL, "uuid": vmUUID}}}}}
		u.SetAPIVersion(v1alpha1.GroupVersion.String())
		u.SetKind("VMDKImage")
		u.SetNamespace(ns)
		u.SetName("vs-no-secret")
		err := k8sClient.Create(ctx, u)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), errString(err))
		Expect(err.Error()).To(ContainSubstring("spec.source.vsphere.secretRef: Required value"))
	})

	It("accepts each selector and both thumbprint forms, defaulting the transport to datastore", func() {
		for _, spec := range []v1alpha1.VMDKImageSpec{
			with(func(v *v1alpha1.VSphereSource) {}),
			with(func(v *v1alpha1.VSphereSource) {
				v.UUID, v.InventoryPath, v.DiskIndex = "", "/dc/vm/folder/web 01", ptr.To[int32](0)
			}),
			with(func(v *v1alpha1.VSphereSource) {
				v.UUID, v.MoRef, v.DiskLabel, v.Snapshot = "", "vm-42", "Hard disk 2", "snapshot-3"
			}),
			with(func(v *v1alpha1.VSphereSource) { v.UUID, v.MoRef, v.Thumbprint = "", "17", sha1Hex }),
			with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = strings.Repeat("ab", 32) }),
			with(func(v *v1alpha1.VSphereSource) {
				v.Thumbprint = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67"
			}),
			with(func(v *v1alpha1.VSphereSource) { v.Thumbprint = sha256Colons }),
			with(func(v *v1alpha1.VSphereSource) { v.CAConfigMap, v.Transport = "vc-ca", v1alpha1.TransportNFC }),
		} {
			img, err := create(spec)
			Expect(err).NotTo(HaveOccurred(), fmt.Sprintf("%+v", *spec.Source.VSphere))
			if spec.Source.VSphere.Transport == "" {
				// As stored (Create returns the apiserver's object).
				Expect(img.Spec.Source.VSphere.Transport).To(Equal(v1alpha1.TransportDatastore))
			}
		}
	})
})
