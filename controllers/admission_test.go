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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// config/admission's policies, in the real apiserver: a user may make a
// VMDKImage (or a PVC to be filled from one) use only objects they may
// read themselves.

// applyAdmissionPolicies creates the objects of config/admission.
func applyAdmissionPolicies() {
	b, err := os.ReadFile(filepath.Join("..", "config", "admission", "referenced-objects.yaml"))
	Expect(err).NotTo(HaveOccurred())
	for _, doc := range strings.Split(string(b), "\n---\n") {
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(context.Background(), u))).To(Succeed())
	}
}

// tenantClient is a user in ns allowed the verbs given per resource.
func tenantClient(ns, name string, rules ...rbacv1.PolicyRule) client.Client {
	ctx := context.Background()
	Expect(k8sClient.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules})).To(Succeed())
	Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	})).To(Succeed())
	user, err := testEnv.AddUser(envtest.User{Name: name}, testEnv.Config)
	Expect(err).NotTo(HaveOccurred())
	c, err := client.New(user.Config(), client.Options{Scheme: k8sClient.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	return c
}

var _ = Describe("admission policies", func() {
	ctx := context.Background()
	BeforeEach(applyAdmissionPolicies)

	It("refuses a VMDKImage naming a Secret, ConfigMap or PVC its creator may not read", func() {
		ns := newNamespace()
		images := rbacv1.PolicyRule{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"vmdkimages"}, Verbs: []string{"create", "get"}}
		tenant := tenantClient(ns, "tenant", images)
		create := func(name string, src v1alpha1.ImageSource) error {
			return tenant.Create(ctx, &v1alpha1.VMDKImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.VMDKImageSpec{Size: gi(1), Source: &src}})
		}
		secret := v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://tenant.example/d.vmdk", SecretRef: "vcenter-admin"}}
		Eventually(untilRefused(func(name string) error { return create(name, secret) }), timeout, interval).Should(
			ContainSubstring("source.http.secretRef: you may not read Secret vcenter-admin yourself"))
		Expect(errString(create("ca", v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://tenant.example/d.vmdk", CAConfigMap: "internal-ca"}}))).To(
			ContainSubstring("source.http.caConfigMap: you may not read ConfigMap internal-ca yourself"))
		Expect(errString(create("copy", v1alpha1.ImageSource{PVC: &v1alpha1.PVCSource{ClaimName: "payroll", Path: "disk.vmdk"}}))).To(
			ContainSubstring("source.pvc.claimName: you may not read PersistentVolumeClaim payroll yourself"))
		Expect(create("anonymous", v1alpha1.ImageSource{HTTP: &v1alpha1.HTTPSource{URL: "https://tenant.example/d.vmdk"}})).To(Succeed())

		// Allowed to read that one Secret, the same image is accepted.
		Expect(k8sClient.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-creds"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"vcenter-admin"}, Verbs: []string{"get"}}}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-creds"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-creds"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "tenant"}}})).To(Succeed())
		Eventually(func() error { return create("mine", secret) }, timeout, interval).Should(Succeed())
	})

	It("refuses a PVC to be filled from a VMDKImage its creator may not read", func() {
		ns := newNamespace()
		pvcs := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"create"}}
		create := func(c client.Client, name string) error {
			return c.Create(ctx, &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *gi(2)}},
					DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptr.To(v1alpha1.GroupVersion.Group), Kind: "VMDKImage", Name: "golden"},
				},
			})
		}
		outsider := tenantClient(ns, "outsider", pvcs)
		Eventually(untilRefused(func(name string) error { return create(outsider, name) }), timeout, interval).Should(
			ContainSubstring("dataSourceRef: you may not read VMDKImage golden yourself"))
		reader := tenantClient(ns, "reader", pvcs, rbacv1.PolicyRule{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"vmdkimages"}, Verbs: []string{"get"}})
		Eventually(func() error { return create(reader, "d") }, timeout, interval).Should(Succeed())
		// PVCs that name no VMDKImage are none of the policy's business.
		plain := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}, Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *gi(1)}},
		}}
		Expect(outsider.Create(ctx, plain)).To(Succeed())
	})
})

// untilRefused calls create with a new name each time, so that attempts
// made before the apiserver has loaded the policies (which are accepted)
// do not make later ones fail as AlreadyExists.
func untilRefused(create func(name string) error) func() string {
	n := 0
	return func() string {
		n++
		return errString(create(fmt.Sprintf("probe-%d", n)))
	}
}

func errString(err error) string {
	if err == nil {
		return "accepted"
	}
	return err.Error()
}
