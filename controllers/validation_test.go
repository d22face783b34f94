package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// The CRD's admission-time rules (CEL and schema) for what can never work,
// checked against the real apiserver: each bad object is refused with the
// message a `kubectl apply` user reads, and the boundary objects pass.
var _ = Describe("validation", func() {
	ctx := context.Background()

	// refused asserts that creating obj fails validation with each of
	// wants in the message.
	refused := func(obj client.Object, wants ...string) {
		GinkgoHelper()
		err := k8sClient.Create(ctx, obj)
		Expect(err).To(HaveOccurred(), "%s was accepted, want %q", obj.GetName(), wants)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), err.Error())
		for _, want := range wants {
			Expect(err.Error()).To(ContainSubstring(want))
		}
	}
	accepted := func(obj client.Object) {
		GinkgoHelper()
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
	image := func(ns, name string, spec v1alpha1.VMDKImageSpec) *v1alpha1.VMDKImage {
		return &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	}
	// raw is an image as untyped JSON, so sizes can be JSON integers (as
	// `size: 1024` in YAML is) rather than the strings typed clients send.
	raw := func(ns, name string, spec map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
		u.SetAPIVersion(v1alpha1.GroupVersion.String())
		u.SetKind("VMDKImage")
		u.SetNamespace(ns)
		u.SetName(name)
		return u
	}
	q := func(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

	It("refuses sizes that are not positive", func() {
		ns := newNamespace()
		for i, s := range []string{"-5Gi", "0", "-1m"} {
			refused(image(ns, fmt.Sprint("neg-", i), v1alpha1.VMDKImageSpec{Size: q(s)}), "spec.size: Invalid value", "size must be positive")
			refused(image(ns, fmt.Sprint("neg-storage-", i), v1alpha1.VMDKImageSpec{Size: q("1Gi"), Storage: v1alpha1.StorageSpec{Size: q(s)}}),
				"storage.size must be positive")
		}
		refused(raw(ns, "neg-int", map[string]any{"size": int64(-5)}), "size must be positive")
		refused(raw(ns, "neg-int-storage", map[string]any{"size": int64(1 << 30), "storage": map[string]any{"size": int64(0)}}), "storage.size must be positive")
		// The smallest sizes (a byte rounds up to a sector, a milli-byte to a byte).
		accepted(image(ns, "one-byte", v1alpha1.VMDKImageSpec{Size: q("1"), Storage: v1alpha1.StorageSpec{Size: q("1")}}))
		accepted(image(ns, "one-milli", v1alpha1.VMDKImageSpec{Size: q("1m")}))
		accepted(raw(ns, "one-int", map[string]any{"size": int64(1), "storage": map[string]any{"size": int64(1)}}))
	})

	It("compares integer sizes as quantities, so typed updates of them pass", func() {
		// `size: 1073741824` in YAML is stored as a JSON integer; a typed
		// client (the controller adding its finalizer) sends it back as
		// "1Gi". Neither the immutability nor the grow rule may refuse that.
		ns := newNamespace()
		accepted(raw(ns, "ints", map[string]any{"size": int64(1 << 30), "storage": map[string]any{"size": int64(2 << 30)}}))
		update := func(mutate func(*v1alpha1.VMDKImage)) string {
			var msg string
			Eventually(func() bool { // retried: the controller's own updates may conflict
				img := getImage(ns, "ints")
				mutate(img)
				err := k8sClient.Update(ctx, img)
				msg = fmt.Sprint(err)
				return !apierrors.IsConflict(err)
			}, timeout, interval).Should(BeTrue())
			return msg
		}
		Expect(update(func(i *v1alpha1.VMDKImage) { i.Labels = map[string]string{"touched": "yes"} })).To(Equal("<nil>"))
		Expect(update(func(i *v1alpha1.VMDKImage) { i.Spec.Size = q("1024Mi") })).To(Equal("<nil>"))
		Expect(update(func(i *v1alpha1.VMDKImage) { i.Spec.Size = gi(2) })).To(ContainSubstring("size is immutable"))
		Expect(update(func(i *v1alpha1.VMDKImage) { i.Spec.Storage.Size = q("1Gi") })).To(ContainSubstring("storage.size may only grow"))
		Expect(update(func(i *v1alpha1.VMDKImage) { i.Spec.Storage.Size = q("3Gi") })).To(Equal("<nil>"))
	})

	It("refuses sizes past each subformat's limit, the same as vmdk.MaxSize", func() {
		ns := newNamespace()
		for _, sf := range []v1alpha1.Subformat{v1alpha1.MonolithicSparse, v1alpha1.StreamOptimized, v1alpha1.TwoGbMaxExtentSparse,
			v1alpha1.TwoGbMaxExtentFlat, v1alpha1.MonolithicFlat} {
			limit := vmdk.MaxSize(vmdk.Subformat(sf))
			Expect(limit).To(BeNumerically(">", 0), string(sf))
			name := strings.ToLower(string(sf))
			want := fmt.Sprintf("image is at most %d bytes", limit)
			// The exact limit, as a string and as a JSON integer, is accepted.
			accepted(image(ns, name+"-max", v1alpha1.VMDKImageSpec{Subformat: sf, Size: resource.NewQuantity(limit, resource.DecimalSI)}))
			accepted(raw(ns, name+"-max-int", map[string]any{"subformat": string(sf), "size": limit}))
			// A byte more rounds up to a sector more, which vmdk refuses.
			for _, over := range []int64{limit + 1, limit + vmdk.SectorSize} {
				img := image(ns, name+"-over", v1alpha1.VMDKImageSpec{Subformat: sf, Size: resource.NewQuantity(over, resource.DecimalSI)})
				refused(img, "spec.size: Invalid value", want, string(sf))
			}
			refused(raw(ns, name+"-over-int", map[string]any{"subformat": string(sf), "size": limit + vmdk.SectorSize}), want)
		}
		// The default subformat is monolithicSparse.
		refused(image(ns, "default-over", v1alpha1.VMDKImageSpec{Size: q("3Ti")}), "monolithicSparse or streamOptimized image is at most")
	})

	It("refuses names longer than a label value, for images and their references", func() {
		ns := newNamespace()
		long, fits := strings.Repeat("n", 64), strings.Repeat("n", 63)
		refused(image(ns, long, v1alpha1.VMDKImageSpec{Size: gi(1)}), "metadata.name must be at most 63 characters")
		accepted(image(ns, fits, v1alpha1.VMDKImageSpec{Size: gi(1)}))
		// generateName leaves room for its suffix within 63 characters.
		gen := &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: strings.Repeat("g", 80)}, Spec: v1alpha1.VMDKImageSpec{Size: gi(1)}}
		accepted(gen)
		Expect(len(gen.Name)).To(BeNumerically("<=", 63))

		refused(image(ns, "child", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: long}}), "spec.backingImage.name: Too long")
		refused(image(ns, "flatten", v1alpha1.VMDKImageSpec{Source: &v1alpha1.ImageSource{Image: &v1alpha1.ImageReference{Name: long}}}), "spec.source.image.name: Too long")
		accepted(image(ns, "child", v1alpha1.VMDKImageSpec{Size: gi(1), BackingImage: &v1alpha1.ImageReference{Name: fits}}))
		accepted(image(ns, "flatten", v1alpha1.VMDKImageSpec{Source: &v1alpha1.ImageSource{Image: &v1alpha1.ImageReference{Name: fits}}}))
	})

	It("accepts exactly the adapter types vmdk writes", func() {
		// The enum in the generated CRD is vmdk's list...
		b, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "storage.vmdkpop.io_vmdkimages.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var crd struct {
			Spec struct {
				Versions []struct {
					Schema struct {
						OpenAPIV3Schema struct {
							Properties struct {
								Spec struct {
									Properties struct {
										AdapterType struct {
											Enum []string `json:"enum"`
										} `json:"adapterType"`
									} `json:"properties"`
								} `json:"spec"`
							} `json:"properties"`
						} `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		Expect(yaml.Unmarshal(b, &crd)).To(Succeed())
		Expect(crd.Spec.Versions).To(HaveLen(1))
		Expect(crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties.AdapterType.Enum).To(ConsistOf(vmdk.AdapterTypes()))

		// ...and the apiserver takes each of them and nothing else.
		ns := newNamespace()
		for _, a := range vmdk.AdapterTypes() {
			accepted(image(ns, strings.ToLower(a), v1alpha1.VMDKImageSpec{Size: gi(1), AdapterType: a}))
		}
		refused(image(ns, "scsi9", v1alpha1.VMDKImageSpec{Size: gi(1), AdapterType: "scsi9"}), `spec.adapterType: Unsupported value: "scsi9"`)
	})

	It("refuses a secretRef over plain http:// unless insecureAllowCredentialsOverHTTP", func() {
		ns := newNamespace()
		imp := func(name string, h v1alpha1.HTTPSource) *v1alpha1.VMDKImage {
			return image(ns, name, v1alpha1.VMDKImageSpec{Size: gi(1), Source: &v1alpha1.ImageSource{HTTP: &h}})
		}
		want := "secretRef's credentials would be sent over plain http://, where anyone on the path can read them: use an https:// URL, or set insecureAllowCredentialsOverHTTP: true"
		refused(imp("plain", v1alpha1.HTTPSource{URL: "http://example.com/d.vmdk", SecretRef: "creds"}), "spec.source.http.secretRef: Invalid value", want)
		accepted(imp("plain-allowed", v1alpha1.HTTPSource{URL: "http://example.com/d.vmdk", SecretRef: "creds", InsecureAllowCredentialsOverHTTP: true}))
		accepted(imp("tls", v1alpha1.HTTPSource{URL: "https://example.com/d.vmdk", SecretRef: "creds"}))
		accepted(imp("plain-anonymous", v1alpha1.HTTPSource{URL: "http://example.com/d.vmdk"}))
		// An explicit empty secretRef sends no credentials.
		accepted(raw(ns, "plain-empty-secret", map[string]any{"size": "1Gi", "source": map[string]any{"http": map[string]any{"url": "http://example.com/d.vmdk", "secretRef": ""}}}))

		// imager refuses credentials over http:// by itself too: the
		// controller passes the user's consent on, and only then.
		Expect(jobOf(ns, "plain-allowed").Spec.Template.Spec.Containers[0].Args).To(ContainElement("--insecure-allow-credentials-over-http"))
		Expect(jobOf(ns, "tls").Spec.Template.Spec.Containers[0].Args).NotTo(ContainElement("--insecure-allow-credentials-over-http"))
	})
})
