//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

const (
	testNS    = "vmdkpop-e2e"
	image     = "vmdkpop:dev"
	chainSize = 32 << 20
	imagerUID = 65532 // owns the VMDKImage files
	qemuUID   = 107   // KubeVirt's qemu: owns populated disk.img files
)

func mib(n int64) *resource.Quantity { return resource.NewQuantity(n<<20, resource.BinarySI) }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func getImage(name string) *v1alpha1.VMDKImage {
	GinkgoHelper()
	return imageIn(testNS, name)
}

func createImage(name string, spec v1alpha1.VMDKImageSpec) {
	img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Spec: spec}
	ExpectWithOffset(1, k8s.Create(ctx, img)).To(Succeed())
}

// waitPhase waits for an image to reach phase (failing fast on Failed
// when Ready is wanted).
func waitPhase(name string, phase v1alpha1.Phase) *v1alpha1.VMDKImage {
	var img *v1alpha1.VMDKImage
	EventuallyWithOffset(1, func() v1alpha1.Phase {
		img = getImage(name)
		if phase == v1alpha1.PhaseReady && img.Status.Phase == v1alpha1.PhaseFailed {
			StopTrying(fmt.Sprintf("image %s failed: %+v", name, img.Status.Conditions)).Now()
		}
		return img.Status.Phase
	}, timeout, time.Second).Should(Equal(phase), name)
	return img
}

type podVolume struct {
	claim    string
	path     string // mount path, or device path for block
	readOnly bool
	block    bool
}

// imagerPod runs imager with args in a pod and returns the result it
// wrote to its termination message.
func imagerPod(name string, uid int64, args []string, vols ...podVolume) *jobapi.Result {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(uid), RunAsGroup: ptr.To(uid), FSGroup: ptr.To(uid),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "imager", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"/imager"}, Args: append(args, "--result-file", "/dev/termination-log"),
				SecurityContext: &corev1.SecurityContext{
					ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	c := &pod.Spec.Containers[0]
	for i, v := range vols {
		vn := "v" + strconv.Itoa(i)
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: vn, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.claim, ReadOnly: v.readOnly}}})
		if v.block {
			c.VolumeDevices = append(c.VolumeDevices, corev1.VolumeDevice{Name: vn, DevicePath: v.path})
		} else {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: vn, MountPath: v.path, ReadOnly: v.readOnly})
		}
	}
	return runToResult(pod)
}

// runToResult creates an imager pod, waits for it to end, and returns the
// result it wrote to its termination message (it must have succeeded).
func runToResult(pod *corev1.Pod) *jobapi.Result {
	GinkgoHelper()
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func() corev1.PodPhase {
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		return pod.Status.Phase
	}, timeout, time.Second).Should(BeElementOf(corev1.PodSucceeded, corev1.PodFailed), pod.Name)
	var msg string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Terminated != nil {
			msg = cs.State.Terminated.Message
		}
	}
	r, err := jobapi.Parse(msg)
	Expect(err).NotTo(HaveOccurred(), "pod %s: %q", pod.Name, msg)
	Expect(pod.Status.Phase).To(Equal(corev1.PodSucceeded), "pod %s: %s", pod.Name, r.Message)
	return r
}

// chainMounts mounts an image and its ancestors read-only where their
// relative parent paths expect them.
func chainMounts(names ...string) []podVolume {
	var vols []podVolume
	for _, n := range names {
		vols = append(vols, podVolume{claim: getImage(n).Status.ClaimName, path: "/images/" + n, readOnly: true})
	}
	return vols
}

// checkAgainstFiles compares an image's status with `imager info` on its
// files.
func checkAgainstFiles(name string, ancestors ...string) {
	img := getImage(name)
	r := imagerPod("info-"+name+"-"+strconv.FormatInt(time.Now().UnixNano()%100000, 10), imagerUID,
		[]string{"info", "--root", "/images", "/images/" + name + "/disk.vmdk"}, chainMounts(append([]string{name}, ancestors...)...)...)
	ExpectWithOffset(1, r.CID).To(Equal(img.Status.CID), name)
	ExpectWithOffset(1, r.ParentCID).To(Equal(img.Status.ParentCID), name)
	ExpectWithOffset(1, r.VirtualSize).To(Equal(img.Status.VirtualSize), name)
	ExpectWithOffset(1, r.AllocatedBytes).To(Equal(img.Status.AllocatedBytes), name)
	ExpectWithOffset(1, r.CreateType).To(Equal(img.Status.CreateType), name)
}

// writeLevel writes into an image with imager (its chain mounted), then
// has the controller re-read it.
func writeLevel(name string, ancestors []string, args ...string) {
	vols := append([]podVolume{{claim: getImage(name).Status.ClaimName, path: "/images/" + name}}, chainMounts(ancestors...)...)
	imagerPod("write-"+name, imagerUID, append(append([]string{"write", "--root", "/images"}, args...), "/images/"+name+"/disk.vmdk"), vols...)
	Eventually(func() error {
		// Added, as kubectl annotate does: the controller's own
		// annotations (the UIDs of the image's PVC and Jobs) stay.
		img := getImage(name)
		if img.Annotations == nil {
			img.Annotations = map[string]string{}
		}
		img.Annotations[v1alpha1.AnnotationRefresh] = "after-write"
		return k8s.Update(ctx, img)
	}, timeout, time.Second).Should(Succeed())
	Eventually(func() string { return getImage(name).Status.Refreshed }, timeout, time.Second).Should(Equal("after-write"))
}

// randomBytes is what `imager write --random SEED` writes.
func randomBytes(seed int64, b []byte) {
	var key [32]byte
	copy(key[:], strconv.FormatInt(seed, 10))
	rand.NewChaCha8(key).Read(b)
}

var _ = Describe("vmdkpop on a real cluster", Ordered, func() {
	expected := make([]byte, chainSize) // the chain's content, as the writes make it

	BeforeAll(func() {
		exec.Command(kubectl, "delete", "namespace", testNS, "--wait=true", "--timeout=120s").Run()
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}})).To(Succeed())
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dump(testNS)
		}
	})

	It("creates a blank image of every subformat, its status matching its files", func() {
		for _, sf := range []v1alpha1.Subformat{v1alpha1.MonolithicSparse, v1alpha1.MonolithicFlat, v1alpha1.TwoGbMaxExtentSparse, v1alpha1.TwoGbMaxExtentFlat, v1alpha1.StreamOptimized} {
			createImage("blank-"+strings.ToLower(string(sf)), v1alpha1.VMDKImageSpec{Size: mib(64), Subformat: sf})
		}
		for _, sf := range []string{"monolithicsparse", "monolithicflat", "twogbmaxextentsparse", "twogbmaxextentflat", "streamoptimized"} {
			img := waitPhase("blank-"+sf, v1alpha1.PhaseReady)
			Expect(img.Status.VirtualSize).To(Equal(int64(64 << 20)))
			Expect(strings.ToLower(img.Status.CreateType)).To(Equal(sf))
			checkAgainstFiles("blank-" + sf)
		}
	})

	It("builds a 3-deep chain with writes at each level", func() {
		createImage("base", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(chainSize, resource.BinarySI)})
		waitPhase("base", v1alpha1.PhaseReady)
		writeLevel("base", nil, "--random", "1", "0", "6M")
		randomBytes(1, expected[:6<<20])

		createImage("mid", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(chainSize, resource.BinarySI), BackingImage: &v1alpha1.ImageReference{Name: "base"}})
		waitPhase("mid", v1alpha1.PhaseReady)
		writeLevel("mid", []string{"base"}, "-P", "2", "4M", "4M")
		copy(expected[4<<20:8<<20], bytes.Repeat([]byte{2}, 4<<20))

		createImage("top", v1alpha1.VMDKImageSpec{Size: resource.NewQuantity(chainSize, resource.BinarySI), BackingImage: &v1alpha1.ImageReference{Name: "mid"}})
		waitPhase("top", v1alpha1.PhaseReady)
		writeLevel("top", []string{"mid", "base"}, "-P", "3", "7M", "100k")
		copy(expected[7<<20:7<<20+100<<10], bytes.Repeat([]byte{3}, 100<<10))

		for _, c := range []struct{ child, parent string }{{"mid", "base"}, {"top", "mid"}} {
			Eventually(func() metav1.ConditionStatus {
				cond := meta.FindStatusCondition(getImage(c.child).Status.Conditions, v1alpha1.ConditionChainValid)
				if cond == nil {
					return ""
				}
				return cond.Status
			}, timeout, time.Second).Should(Equal(metav1.ConditionTrue), c.child)
			Expect(getImage(c.child).Status.ParentCID).To(Equal(getImage(c.parent).Status.CID))
		}
		checkAgainstFiles("base")
		checkAgainstFiles("mid", "base")
		checkAgainstFiles("top", "mid", "base")
		r := imagerPod("checksum-top", imagerUID, []string{"checksum", "--root", "/images", "/images/top/disk.vmdk"}, chainMounts("top", "mid", "base")...)
		Expect(r.SHA256).To(Equal(sha(expected)))
	})

	It("flattens the chain into one image", func() {
		createImage("flat", v1alpha1.VMDKImageSpec{Subformat: v1alpha1.StreamOptimized, Source: &v1alpha1.ImageSource{Image: &v1alpha1.ImageReference{Name: "top"}}})
		img := waitPhase("flat", v1alpha1.PhaseReady)
		Expect(img.Status.ParentCID).To(Equal("ffffffff"))
		checkAgainstFiles("flat")
		r := imagerPod("checksum-flat", imagerUID, []string{"checksum", "/images/flat/disk.vmdk"}, chainMounts("flat")...)
		Expect(r.SHA256).To(Equal(sha(expected)))
	})

	It("imports over HTTP from a server pod, and fails a bad checksum for good", func() {
		raw := make([]byte, 8<<20)
		randomBytes(7, raw[:256<<10])
		copy(raw[4<<20:], bytes.Repeat([]byte{0x5a}, 64<<10))
		var stream bytes.Buffer
		w, err := vmdk.NewStreamWriter(&stream, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: int64(len(raw))}})
		Expect(err).NotTo(HaveOccurred())
		_, err = w.WriteAt(raw[:256<<10], 0)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.WriteAt(raw[4<<20:4<<20+64<<10], 4<<20)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.Close()).To(Succeed())

		Expect(k8s.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "disks"},
			BinaryData: map[string][]byte{"disk.vmdk": stream.Bytes()}})).To(Succeed())
		ip := fileserverPod(testNS, "fileserver", []string{"--dir", "/data"},
			[]corev1.Volume{{Name: "disks", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "disks"}}}}},
			[]corev1.VolumeMount{{Name: "disks", MountPath: "/data"}})
		url := "http://" + ip + ":8080/disk.vmdk"

		createImage("web", v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: url, Checksum: "sha256:" + sha(stream.Bytes())}},
			Storage: v1alpha1.StorageSpec{Size: mib(64)},
		})
		createImage("web-bad", v1alpha1.VMDKImageSpec{
			Source:  &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: url, Checksum: "sha256:" + strings.Repeat("0", 64)}},
			Storage: v1alpha1.StorageSpec{Size: mib(64)},
		})
		img := waitPhase("web", v1alpha1.PhaseReady)
		Expect(img.Status.VirtualSize).To(Equal(int64(len(raw))))
		checkAgainstFiles("web")
		r := imagerPod("checksum-web", imagerUID, []string{"checksum", "/images/web/disk.vmdk"}, chainMounts("web")...)
		Expect(r.SHA256).To(Equal(sha(raw)))

		bad := waitPhase("web-bad", v1alpha1.PhaseFailed)
		ready := meta.FindStatusCondition(bad.Status.Conditions, v1alpha1.ConditionReady)
		Expect(ready.Reason).To(Equal(jobapi.ReasonChecksumMismatch))
	})

	It("populates a Filesystem PVC and a Block PVC from the chain", func() {
		class := "" // the cluster's default class
		for _, block := range []bool{false, true} {
			name, size := "vm-disk-fs", mib(64)
			mode := corev1.PersistentVolumeFilesystem
			if block {
				name, size, mode = "vm-disk-block", mib(32), corev1.PersistentVolumeBlock
			}
			pvc := &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					VolumeMode:    &mode,
					Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *size}},
					DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptr.To("storage.vmdkpop.io"), Kind: "VMDKImage", Name: "top"},
				},
			}
			if class != "" {
				pvc.Spec.StorageClassName = &class
			}
			Expect(k8s.Create(ctx, pvc)).To(Succeed())
		}
		// The consumers (as a VM would be) read the disks once populated.
		r := imagerPod("consume-fs", qemuUID, []string{"checksum", "-f", "raw", "/disk/disk.img"},
			podVolume{claim: "vm-disk-fs", path: "/disk", readOnly: true})
		Expect(r.SHA256).To(Equal(sha(expected)))
		r = imagerPod("consume-block", qemuUID, []string{"checksum", "-f", "raw", "--size", strconv.Itoa(chainSize), "/dev/vmdisk"},
			podVolume{claim: "vm-disk-block", path: "/dev/vmdisk", block: true})
		Expect(r.SHA256).To(Equal(sha(expected)))
		for _, name := range []string{"vm-disk-fs", "vm-disk-block"} {
			pvc := &corev1.PersistentVolumeClaim{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testNS, Name: name}, pvc)).To(Succeed())
			Expect(pvc.Status.Phase).To(Equal(corev1.ClaimBound))
			Expect(pvc.Annotations[v1alpha1.AnnPhase]).To(Equal(v1alpha1.PopSucceeded))
			Expect(pvc.Finalizers).NotTo(ContainElement(v1alpha1.PopulatorFinalizer))
		}
		// The prime PVCs and Jobs are gone.
		Eventually(func() []string {
			list := &corev1.PersistentVolumeClaimList{}
			Expect(k8s.List(ctx, list, client.InNamespace(testNS))).To(Succeed())
			var primes []string
			for _, p := range list.Items {
				if strings.HasPrefix(p.Name, "prime-") {
					primes = append(primes, p.Name)
				}
			}
			return primes
		}, timeout, time.Second).Should(BeEmpty())
	})

	It("blocks deleting an image that has a child", func() {
		Expect(k8s.Delete(ctx, getImage("base"))).To(Succeed())
		Eventually(func() *metav1.Condition {
			return meta.FindStatusCondition(getImage("base").Status.Conditions, v1alpha1.ConditionDeletionBlocked)
		}, timeout, time.Second).Should(And(Not(BeNil()), HaveField("Message", ContainSubstring("mid"))))
		Consistently(func() error {
			return k8s.Get(ctx, types.NamespacedName{Namespace: testNS, Name: "base"}, &v1alpha1.VMDKImage{})
		},
			5*time.Second, time.Second).Should(Succeed())
	})
})
