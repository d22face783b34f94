//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// What an ESXi datastore holds, served the way its file API serves it.

const (
	esxiDC, esxiDS = "ha-datacenter", "datastore1"
	// A size that is not a multiple of the 16 MiB a seSparse grain table
	// covers, so the last table is partial.
	esxiChainSize = 40<<20 + 4096
	esxiDeltas    = 2
	esxiSeed      = 5
)

// fileserverPod runs hack/fileserver (image vmdkpop-e2e-fileserver) in
// namespace ns with args (after --addr :8080) and the volumes given, hardened as
// vmdkpop's own pods are, and returns the pod's IP once it is ready.
func fileserverPod(ns, name string, args []string, volumes []corev1.Volume, mounts []corev1.VolumeMount) string {
	GinkgoHelper()
	return serverPod(ns, name, append([]string{"/fileserver", "--addr", ":8080"}, args...), nil, volumes, mounts)
}

// serverPod runs command from the e2e servers' image (vmdkpop-e2e-fileserver:
// /fileserver, /vcsim) in namespace ns with env and the volumes given,
// hardened as vmdkpop's own pods are, and returns the pod's IP once it is
// ready.
func serverPod(ns, name string, command []string, env []corev1.EnvVar, volumes []corev1.Volume, mounts []corev1.VolumeMount) string {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: path.Base(command[0]), Image: "vmdkpop-e2e-fileserver:v1", ImagePullPolicy: corev1.PullIfNotPresent,
				Command:      command,
				Env:          env,
				VolumeMounts: mounts,
				SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
			Volumes: volumes,
		},
	}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func() string {
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		if pod.Status.Phase != corev1.PodRunning || !podReady(pod) {
			return ""
		}
		return pod.Status.PodIP
	}, timeout, time.Second).ShouldNot(BeEmpty())
	return pod.Status.PodIP
}

// datastorePod plays an ESXi host's datastore: hack/fileserver writes the
// ESXi chain (vmdktest.WriteESXiChain) into an emptyDir and serves it under
// /folder/vm/ with basic auth from Secret creds. It returns the pod's IP.
func datastorePod(ns, creds string) string {
	GinkgoHelper()
	return fileserverPod(ns, "datastore", []string{"--dir", "/data",
		"--esxi-chain", strconv.Itoa(esxiChainSize), "--deltas", strconv.Itoa(esxiDeltas), "--seed", strconv.Itoa(esxiSeed),
		"--datastore", esxiDC + "/" + esxiDS, "--credentials-dir", "/creds"},
		[]corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: creds}}},
		},
		[]corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "creds", MountPath: "/creds", ReadOnly: true}})
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.ContainerStatuses {
		if !c.Ready {
			return false
		}
	}
	return len(pod.Status.ContainerStatuses) > 0
}

var _ = Describe("disks as an ESXi datastore holds them", func() {
	It("imports a vmfs base under two seSparse snapshots over the datastore API and populates a PVC byte for byte", func() {
		ns := tenantNamespace("vmdkpop-e2e-esxi")
		// The content the chain reads as: the same generator, run here.
		chain, err := vmdktest.WriteESXiChain(GinkgoT().TempDir(), "vm", esxiChainSize, vmdktest.ChainOptions{Deltas: esxiDeltas, Seed: esxiSeed})
		Expect(err).NotTo(HaveOccurred())
		sum := sha256.New()
		_, err = chain.Model.WriteTo(sum)
		Expect(err).NotTo(HaveOccurred())
		want := hex.EncodeToString(sum.Sum(nil))

		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "esxi"},
			StringData: map[string]string{"username": "root", "password": "e2e-secret"}})).To(Succeed())
		ip := datastorePod(ns, "esxi")
		url := fmt.Sprintf("http://%s:8080/folder/vm/vm-%06d.vmdk?dcPath=%s&dsName=%s", ip, esxiDeltas, esxiDC, esxiDS)

		// The plain-http datastore needs the opt-in to send credentials;
		// a real host is https.
		createImageIn(ns, "esxi", v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: url, SecretRef: "esxi", InsecureAllowCredentialsOverHTTP: true}},
			Storage: v1alpha1.StorageSpec{Size: mib(128)},
		})
		waitReady(ns, "esxi")
		img := imageIn(ns, "esxi")
		Expect(img.Status.VirtualSize).To(Equal(int64(esxiChainSize)))
		r := podIn(ns, "checksum-esxi", []string{"checksum", "/images/esxi/disk.vmdk"},
			podVolume{claim: img.Status.ClaimName, path: "/images/esxi", readOnly: true})
		Expect(r.SHA256).To(Equal(want), "the imported image reads as the chain")

		// A VM's disk filled from it, as KubeVirt boots from.
		newClaim(ns, "vm-disk", 128, &corev1.TypedObjectReference{APIGroup: ptr.To(v1alpha1.GroupVersion.Group), Kind: "VMDKImage", Name: "esxi"})
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "consume"},
			Spec: hardenedPodSpec(qemuUID, []string{"checksum", "-f", "raw", "/disk/disk.img", "--result-file", "/dev/termination-log"},
				podVolume{claim: "vm-disk", path: "/disk", readOnly: true}),
		}
		Expect(runToResult(pod).SHA256).To(Equal(want), "the populated disk.img reads as the chain")
	})
})
