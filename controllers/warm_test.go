package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Warm migration's image side: a child of the image imported at an
// earlier snapshot, holding only the delta since (source.vsphere.deltaFrom).

var _ = Describe("vSphere delta images", func() {
	ctx := context.Background()
	delta := func(change func(*v1alpha1.VMDKImageSpec)) v1alpha1.VMDKImageSpec {
		spec := v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: "base"},
			Source: &v1alpha1.ImageSource{VSphere: &v1alpha1.VSphereSource{URL: vcURL, SecretRef: "vc", MoRef: "vm-42", Snapshot: "s2", DeltaFrom: "s1"}}}
		change(&spec)
		return spec
	}

	It("imports the delta as a child of its backing image: -b the base, mounted read-only beside it, --vsphere-delta-from", func() {
		ns := newNamespace()
		readyImage(ns, "base", "0a1b2c3d", v1alpha1.VMDKImageSpec{Size: gi(1)})
		newImage(ns, "at-s2", delta(func(*v1alpha1.VMDKImageSpec) {}))
		job := jobOf(ns, "at-s2")
		Eventually(phaseOfImage(ns, "at-s2"), timeout, interval).Should(Equal(v1alpha1.PhaseImporting))
		c := job.Spec.Template.Spec.Containers[0]
		Expect(c.Args).To(Equal([]string{"import", "--result-file", "/dev/termination-log", "--target", "/images/at-s2", "--target-format", "vmdk",
			"-o", "subformat=monolithicSparse", "--size", "1073741824", "--credentials-dir", "/etc/vmdkpop/credentials", "--root", "/images",
			"-b", "/images/base/disk.vmdk", "--vsphere-url", vcURL, "--vsphere-moref", "vm-42", "--vsphere-snapshot", "s2",
			"--vsphere-transport", "datastore", "--vsphere-delta-from", "s1"}))
		base := getImage(ns, "base")
		var mounted bool
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/images/base" {
				mounted = m.ReadOnly
				for _, v := range job.Spec.Template.Spec.Volumes {
					if v.Name == m.Name {
						Expect(v.PersistentVolumeClaim).NotTo(BeNil())
						Expect(v.PersistentVolumeClaim.ClaimName).To(Equal(base.Status.ClaimName))
					}
				}
			}
		}
		Expect(mounted).To(BeTrue(), "the base is mounted read-only at /images/base")
	})

	It("records the delta's start in status.vsphere and the Ready message, kept when status is rebuilt from the PVC", func() {
		ns := newNamespace()
		readyImage(ns, "base", "0a1b2c3d", v1alpha1.VMDKImageSpec{Size: gi(1)})
		newImage(ns, "at-s2", delta(func(*v1alpha1.VMDKImageSpec) {}))
		res := succeeded("5eed5eed", "0a1b2c3d", "monolithicSparse", 1<<30)
		files := []string{"[ds] vm/vm-000001.vmdk", "[ds] vm/vm.vmdk"}
		res.VSphere = &jobapi.VSphereResult{VMName: "vm", DiskLabel: "Hard disk 1", CapacityBytes: 1 << 30, BackingFiles: files,
			Snapshot: "s2 (snapshot-2)", Transport: jobapi.TransportDatastore, DeltaFrom: "s1 (snapshot-1)", BaseTop: files[1], DeltaLinks: 1}
		finishJob(jobOf(ns, "at-s2"), 0, res)
		Eventually(phaseOfImage(ns, "at-s2"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		want := &v1alpha1.VSphereStatus{VMName: "vm", DiskLabel: "Hard disk 1", CapacityBytes: 1 << 30, BackingFiles: files,
			Snapshot: "s2 (snapshot-2)", Transport: "datastore", DeltaFrom: "s1 (snapshot-1)", BaseTop: files[1], DeltaLinks: 1}
		img := getImage(ns, "at-s2")
		Expect(img.Status.VSphere).To(Equal(want))
		Expect(meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady).Message).To(
			HaveSuffix("from Hard disk 1 of VM vm at snapshot s2 (snapshot-2) (the delta since snapshot s1 (snapshot-1))"))
		Expect(k8sClient.Delete(ctx, jobOf(ns, "at-s2"), client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func() int { return len(jobsOf(ns, "at-s2")) }, timeout, interval).Should(BeZero())
		wipeStatus(ns, "at-s2")
		Eventually(phaseOfImage(ns, "at-s2"), timeout, interval).Should(Equal(v1alpha1.PhaseReady))
		Expect(getImage(ns, "at-s2").Status.VSphere).To(Equal(want))
	})

	It("waits for its backing image like any child", func() {
		ns := newNamespace()
		newImage(ns, "early", delta(func(*v1alpha1.VMDKImageSpec) {}))
		Eventually(func() string {
			img := getImage(ns, "early")
			for _, c := range img.Status.Conditions {
				if c.Type == v1alpha1.ConditionReady {
					return c.Reason
				}
			}
			return ""
		}, timeout, interval).Should(Equal(v1alpha1.ReasonWaitingForBacking))
	})

	DescribeTable("refuses what a delta cannot be",
		func(spec v1alpha1.VMDKImageSpec, want string) {
			img := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{GenerateName: "delta-", Namespace: newNamespace()}, Spec: spec}
			err := k8sClient.Create(ctx, img)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), errString(err))
			Expect(err.Error()).To(ContainSubstring(want))
		},
		Entry("no backing image", delta(func(s *v1alpha1.VMDKImageSpec) { s.BackingImage = nil }), "set backingImage to that image"),
		Entry("a split sparse subformat", delta(func(s *v1alpha1.VMDKImageSpec) { s.Subformat = v1alpha1.TwoGbMaxExtentSparse }), "subformat monolithicSparse"),
		Entry("transport nfc", delta(func(s *v1alpha1.VMDKImageSpec) { s.Source.VSphere.Transport = v1alpha1.TransportNFC }), "transport must be datastore"),
		Entry("the same snapshot", delta(func(s *v1alpha1.VMDKImageSpec) { s.Source.VSphere.DeltaFrom = "s2" }), "nothing changed between them"),
		Entry("a backing image and a whole vSphere import", delta(func(s *v1alpha1.VMDKImageSpec) { s.Source.VSphere.DeltaFrom = "" }),
			"backingImage and source cannot both be set"),
		Entry("a backing image and an HTTP source", delta(func(s *v1alpha1.VMDKImageSpec) {
			s.Source = &v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://x/d.vmdk"}}
		}), "backingImage and source cannot both be set"),
	)
})
