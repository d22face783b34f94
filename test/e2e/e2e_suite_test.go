//go:build e2e

// Package e2e drives vmdkpop on a real cluster: it installs the CRD and
// the manager from config/default (image vmdkpop:dev, already loaded on
// the nodes), applies VMDKImages and PVCs, and checks the bytes that land
// in the volumes with imager pods. Any cluster works: KUBECONFIG says
// which (make test-e2e brings up hack/local-cluster.sh when it is unset).
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

var (
	k8s     client.Client
	repo    string
	kubectl string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "vmdkpop e2e")
}

// run runs kubectl and returns its output, failing the spec on error.
func run(args ...string) string {
	cmd := exec.Command(kubectl, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "kubectl %v: %s", args, errb.String())
	return out.String()
}

// dump prints what explains a failure: the manager's log, the events and
// the Jobs' logs of a namespace.
func dump(ns string) {
	for _, args := range [][]string{
		{"logs", "-n", "vmdkpop-system", "deploy/vmdkpop-controller-manager", "--tail", "200"},
		{"get", "vmdkimages,pvc,jobs,pods", "-n", ns, "-o", "wide"},
		{"get", "events", "-n", ns, "--sort-by", ".lastTimestamp"},
		{"get", "pv"},
	} {
		out, _ := exec.Command(kubectl, args...).CombinedOutput()
		fmt.Fprintf(GinkgoWriter, "\n$ kubectl %v\n%s", args, out)
	}
	out, _ := exec.Command(kubectl, "get", "pods", "-n", ns, "-o", "name").Output()
	for _, pod := range bytes.Fields(out) {
		logs, _ := exec.Command(kubectl, "logs", "-n", ns, string(pod), "--tail", "30").CombinedOutput()
		fmt.Fprintf(GinkgoWriter, "\n$ kubectl logs %s\n%s", pod, logs)
	}
}

var _ = BeforeSuite(func() {
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "KUBECONFIG must name the cluster (make test-e2e starts a local one)")
	var err error
	repo, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	kubectl = os.Getenv("KUBECTL")
	if kubectl == "" {
		kubectl = "kubectl"
	}
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	cfg, err := config.GetConfig()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// E2E_CONFIG picks an overlay of config/default (hack/e2e.sh uses
	// config/local on the local cluster, which has no kube-proxy).
	overlay := os.Getenv("E2E_CONFIG")
	if overlay == "" {
		overlay = "config/default"
	}
	By("installing vmdkpop from " + overlay)
	run("apply", "--server-side", "--force-conflicts", "-k", filepath.Join(repo, overlay))
	run("-n", "vmdkpop-system", "rollout", "restart", "deploy/vmdkpop-controller-manager")
	run("-n", "vmdkpop-system", "rollout", "status", "deploy/vmdkpop-controller-manager", "--timeout", "180s")
})

var _ = AfterSuite(func() {
	if os.Getenv("E2E_KEEP") == "" {
		exec.Command(kubectl, "delete", "namespace", testNS, "--wait=false").Run()
	}
})

const timeout = 3 * time.Minute

var ctx = context.Background()
