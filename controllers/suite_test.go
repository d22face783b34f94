package controllers

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// The suite runs a real kube-apiserver and etcd (envtest) with the CRDs
// installed and the manager running; no kubelet or Job controller runs,
// so tests play their part: they create the Job's pods with the
// termination message imager would write, and set the Job's status.

var (
	testEnv   *envtest.Environment
	k8sClient client.Client
	fakeLogs  = &fakeLogReader{lines: map[string][]string{}, reads: map[string]int{}}
	// role is the manager's ClusterRole; managerRequests what it did.
	role            *rbacv1.ClusterRole
	managerRequests = &requestLog{seen: map[string]bool{}}
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "controllers (envtest)")
}

// fakeLogReader serves pod logs the tests set, and counts the reads.
type fakeLogReader struct {
	mu    sync.Mutex
	lines map[string][]string
	reads map[string]int
}

// readsOf is how many times pod's log was read.
func (f *fakeLogReader) readsOf(pod string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads[pod]
}

func (f *fakeLogReader) set(pod string, lines ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines[pod] = lines
}

func (f *fakeLogReader) LastLines(_ context.Context, _, pod, _ string, _ int64) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads[pod]++
	return f.lines[pod], nil
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS must name a directory with kube-apiserver and etcd: run `make envtest-test`, or export KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh envtest)")
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	// Creating a child with blockOwnerDeletion needs update on the
	// owner's finalizers under this plugin (on in OpenShift, for one).
	testEnv.ControlPlane.GetAPIServer().Configure().Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// The manager runs as a user with the generated role and nothing else.
	role, err = managerRole()
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(context.Background(), role)).To(Succeed())
	const managerUser = "vmdkpop-manager"
	Expect(k8sClient.Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vmdkpop-manager"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: managerUser}},
	})).To(Succeed())
	user, err := testEnv.AddUser(envtest.User{Name: managerUser}, cfg)
	Expect(err).NotTo(HaveOccurred())
	mgrCfg := user.Config()
	mgrCfg.Wrap(managerRequests.wrap)

	// Retries after seconds, not minutes: the specs wait for them.
	imagerCfg := DefaultImagerConfig()
	imagerCfg.Retry = RetryPolicy{Limit: 2, Base: 2 * time.Second, Max: 4 * time.Second}
	managerConfig = Config{Imager: imagerCfg, Logs: fakeLogs, DiskUID: 107, DiskGID: 107, MaxConcurrentReconciles: 4}
	managerRest = mgrCfg
	startManager()
})

// The manager under test; specs may stop it and start a fresh one (as a
// restart of the pod would) with the same options.
var (
	managerRest   *rest.Config
	managerConfig Config
	managerStop   context.CancelFunc
	managerDone   chan struct{}
	// managerCache is what the running manager holds in memory.
	managerCache cache.Cache
)

// startManager starts a manager built as main.go builds it (NewManager),
// and returns once its caches have synced.
func startManager() {
	ExpectWithOffset(1, managerStop).To(BeNil(), "a manager is running already")
	mgr, err := NewManager(managerRest, ctrl.Options{
		Scheme:  k8sClient.Scheme(),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// Each start registers the controllers' names again.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}, managerConfig)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	managerStop, managerDone, managerCache = stop, done, mgr.GetCache()
	ExpectWithOffset(1, mgr.GetCache().WaitForCacheSync(ctx)).To(BeTrue())
}

// stopManager stops the running manager and waits until it has: no
// reconcile of it runs once this returns.
func stopManager() {
	ExpectWithOffset(1, managerStop).NotTo(BeNil(), "no manager is running")
	managerStop()
	EventuallyWithOffset(1, managerDone, time.Minute).Should(BeClosed())
	managerStop, managerDone = nil, nil
}

var _ = AfterSuite(func() {
	if managerStop != nil {
		stopManager()
	}
	// Only a whole run uses every verb: a focused one proves nothing.
	if sc, _ := GinkgoConfiguration(); role != nil && len(sc.FocusStrings)+len(sc.SkipStrings)+len(sc.FocusFiles)+len(sc.SkipFiles) == 0 && sc.LabelFilter == "" {
		Expect(unusedGrants(role, managerRequests)).To(BeEmpty(), "config/rbac/role.yaml grants verbs the manager never used in this suite: drop their +kubebuilder:rbac markers (or say in verbsNotRequested why they are needed)")
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})
