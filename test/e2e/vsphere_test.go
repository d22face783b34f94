//go:build e2e

package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// A VM's disk straight from a vCenter: govmomi's simulator (hack/vcsim,
// package test/vcenter) holding VMs whose disks are real ESXi chains.

const (
	vcsimPort = 8989
	// Two seSparse grain tables, the last partial.
	vcsimDiskSize = 20<<20 + 4096
	vcsimSeed     = 11
)

// vcsimPod runs hack/vcsim in namespace ns, listening on the pod's IP (the
// URLs it hands out must name an address the import Jobs reach), with
// Secret creds's username and password, and returns what it holds: the
// JSON line it prints once its inventory is built.
func vcsimPod(ns, creds string) *vcenter.Fixture {
	GinkgoHelper()
	serverPod(ns, "vcsim", []string{"/vcsim", "--listen", "$(POD_IP):" + strconv.Itoa(vcsimPort),
		"--size", strconv.Itoa(vcsimDiskSize), "--seed", strconv.Itoa(vcsimSeed), "--credentials-dir", "/creds"},
		[]corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
		[]corev1.Volume{
			{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: creds}}},
			// vcsim keeps its datastores under the temporary directory.
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
		[]corev1.VolumeMount{{Name: "creds", MountPath: "/creds", ReadOnly: true}, {Name: "tmp", MountPath: "/tmp"}})
	var f vcenter.Fixture
	Eventually(func() string {
		for _, line := range strings.Split(run("logs", "-n", ns, "vcsim"), "\n") {
			if strings.HasPrefix(line, "{") {
				return line
			}
		}
		return ""
	}, timeout, time.Second).Should(Satisfy(func(line string) bool { return json.Unmarshal([]byte(line), &f) == nil }),
		"vcsim describes its inventory")
	return &f
}

var _ = Describe("a VM's disk from vSphere", func() {
	It("imports a running VM's disk at snapshot s2 over the datastore API and populates a PVC byte for byte; a powered-off VM's second disk over NFC", func() {
		ns := tenantNamespace("vmdkpop-e2e-vsphere")
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vcenter"},
			StringData: map[string]string{"username": "administrator@vsphere.local", "password": "e2e-secret"}})).To(Succeed())
		f := vcsimPod(ns, "vcenter")
		Expect(f.Username).To(Equal("administrator@vsphere.local"), "vcsim took the Secret's credentials")
		vm := f.VMs[1]
		Expect(vm.Running).To(BeTrue())
		Expect(vm.Snapshots).To(HaveLen(2))
		s2 := vm.Snapshots[1]
		want := s2.Disks[0]
		Expect(want.Capacity).To(Equal(int64(vcsimDiskSize)))

		createImageIn(ns, "vm-on-s2", v1alpha1.VMDKImageSpec{
			Source: &v1alpha1.ImageSource{VSphere: &v1alpha1.VSphereSource{
				URL: f.URL, SecretRef: "vcenter", Thumbprint: f.ThumbprintSHA256,
				UUID: vm.UUID, Snapshot: s2.Name, Transport: v1alpha1.TransportDatastore,
			}},
			Storage: v1alpha1.StorageSpec{Size: mib(64)},
		})
		waitReady(ns, "vm-on-s2")
		img := imageIn(ns, "vm-on-s2")
		Expect(img.Status.VirtualSize).To(Equal(want.Capacity))
		Expect(img.Status.VSphere).NotTo(BeNil())
		Expect(*img.Status.VSphere).To(Equal(v1alpha1.VSphereStatus{
			VMName: vm.Name, DiskLabel: want.Label, CapacityBytes: want.Capacity, BackingFiles: want.Files,
			Snapshot: s2.Name + " (" + s2.MoRef + ")", Transport: string(v1alpha1.TransportDatastore),
		}), "the status names what was read: the chain frozen at s2, not the link the VM writes")
		r := podIn(ns, "checksum-vm-on-s2", []string{"checksum", "/images/vm-on-s2/disk.vmdk"},
			podVolume{claim: img.Status.ClaimName, path: "/images/vm-on-s2", readOnly: true})
		Expect(r.SHA256).To(Equal(want.SHA256), "the imported image reads as the disk at s2")

		newClaim(ns, "vm-disk", 64, &corev1.TypedObjectReference{APIGroup: ptr.To(v1alpha1.GroupVersion.Group), Kind: "VMDKImage", Name: "vm-on-s2"})
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "consume"},
			Spec: hardenedPodSpec(qemuUID, []string{"checksum", "-f", "raw", "/disk/disk.img", "--result-file", "/dev/termination-log"},
				podVolume{claim: "vm-disk", path: "/disk", readOnly: true}),
		}
		Expect(runToResult(pod).SHA256).To(Equal(want.SHA256), "the populated disk.img reads as the disk at s2")

		// The powered-off VM's second disk as it is, exported over NFC
		// (ExportVm), the server trusted by a CA ConfigMap this time.
		Expect(k8s.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vcenter-ca"},
			Data: map[string]string{"ca.crt": string(f.CertPEM)}})).To(Succeed())
		off := f.VMs[0]
		Expect(off.Running).To(BeFalse())
		disk2 := off.Disks[1]
		createImageIn(ns, "vm-off-disk2", v1alpha1.VMDKImageSpec{
			Source: &v1alpha1.ImageSource{VSphere: &v1alpha1.VSphereSource{
				URL: f.URL, SecretRef: "vcenter", CAConfigMap: "vcenter-ca",
				InventoryPath: off.InventoryPath, DiskLabel: disk2.Label, Transport: v1alpha1.TransportNFC,
			}},
			Storage: v1alpha1.StorageSpec{Size: mib(16)},
		})
		waitReady(ns, "vm-off-disk2")
		img = imageIn(ns, "vm-off-disk2")
		Expect(img.Status.VSphere).NotTo(BeNil())
		Expect(img.Status.VSphere.VMName).To(Equal(off.Name))
		Expect(img.Status.VSphere.DiskLabel).To(Equal(disk2.Label))
		Expect(img.Status.VSphere.Transport).To(Equal(string(v1alpha1.TransportNFC)))
		Expect(img.Status.VSphere.Snapshot).To(BeEmpty())
		r = podIn(ns, "checksum-vm-off-disk2", []string{"checksum", "/images/vm-off-disk2/disk.vmdk"},
			podVolume{claim: img.Status.ClaimName, path: "/images/vm-off-disk2", readOnly: true})
		Expect(r.SHA256).To(Equal(disk2.SHA256), "the image exported over NFC reads as the disk")
	})
})
