// Command manager runs the vmdkpop controllers: VMDKImages become PVCs
// written by imager Jobs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/controllers"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr, probeAddr, namespaces, pullPolicy, memLimit, cpuRequest, maxScratch string
		leaderElect                                                                      bool
		jobTTL                                                                           time.Duration
	)
	cfg := controllers.DefaultImagerConfig()
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint (0 disables it)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader, so only one manager replica reconciles at a time")
	flag.StringVar(&namespaces, "watch-namespace", "", "comma-separated namespaces to watch (default all)")
	flag.StringVar(&cfg.Image, "imager-image", envOr("VMDKPOP_IMAGER_IMAGE", cfg.Image), "container image of the imager Jobs (env VMDKPOP_IMAGER_IMAGE)")
	flag.StringVar(&pullPolicy, "imager-pull-policy", string(cfg.PullPolicy), "imagePullPolicy of the imager Jobs")
	flag.StringVar(&memLimit, "imager-memory-limit", "600Mi", "memory limit of the imager container")
	flag.StringVar(&cpuRequest, "imager-cpu-request", "100m", "CPU request of the imager container")
	flag.StringVar(&maxScratch, "imager-max-scratch", "0", "cap on the scratch space (node disk) an HTTP import may spool its source to; 0: the image's size plus metadata")
	flag.DurationVar(&jobTTL, "job-ttl", time.Hour, "how long finished Jobs are kept")
	var backoff, concurrency int
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "how many images, and how many populations, are reconciled at once")
	var diskUID, diskGID int64
	flag.Int64Var(&diskUID, "disk-uid", 107, "owner of populated disk.img files (KubeVirt's qemu user)")
	flag.Int64Var(&diskGID, "disk-gid", 107, "group of populated disk.img files")
	flag.IntVar(&backoff, "job-backoff-limit", int(cfg.BackoffLimit), "retries of transient Job failures")
	var retryLimit int
	flag.IntVar(&retryLimit, "retry-limit", int(cfg.Retry.Limit), "fresh Jobs the controllers start after a Job's transient failures used up its backoff limit (0: none)")
	flag.DurationVar(&cfg.Retry.Base, "retry-base", cfg.Retry.Base, "delay before the first fresh Job; each next one doubles")
	flag.DurationVar(&cfg.Retry.Max, "retry-max", cfg.Retry.Max, "longest delay between fresh Jobs")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	mem, err := resource.ParseQuantity(memLimit)
	if err != nil {
		return fmt.Errorf("--imager-memory-limit: %w", err)
	}
	cpu, err := resource.ParseQuantity(cpuRequest)
	if err != nil {
		return fmt.Errorf("--imager-cpu-request: %w", err)
	}
	scratch, err := resource.ParseQuantity(maxScratch)
	if err != nil || scratch.Sign() < 0 {
		return fmt.Errorf("--imager-max-scratch %q: want a non-negative quantity", maxScratch)
	}
	cfg.MaxScratch = scratch.Value()
	cfg.Resources.Limits[corev1.ResourceMemory] = mem
	cfg.Resources.Requests[corev1.ResourceCPU] = cpu
	cfg.PullPolicy = corev1.PullPolicy(pullPolicy)
	cfg.BackoffLimit = int32(backoff)
	if retryLimit < 0 || cfg.Retry.Base <= 0 || cfg.Retry.Max < cfg.Retry.Base {
		return fmt.Errorf("--retry-limit %d, --retry-base %s, --retry-max %s: want a limit of 0 or more and 0 < base <= max", retryLimit, cfg.Retry.Base, cfg.Retry.Max)
	}
	cfg.Retry.Limit = int32(retryLimit)
	if jobTTL <= cfg.Retry.Max {
		// A failed Job is the clock of its retry: kept past the longest
		// delay, or the retry would not wait for it.
		return fmt.Errorf("--job-ttl %s must be longer than --retry-max %s", jobTTL, cfg.Retry.Max)
	}
	cfg.TTLSecondsAfterFinished = int32(jobTTL / time.Second)

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	mopts := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "vmdkpop.storage.vmdkpop.io",
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	ccfg := controllers.Config{
		Imager:                  cfg,
		Logs:                    controllers.ClientsetLogReader{Clientset: cs},
		DiskUID:                 diskUID,
		DiskGID:                 diskGID,
		MaxConcurrentReconciles: concurrency,
	}
	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			ccfg.Namespaces = append(ccfg.Namespaces, ns)
		}
	}
	mgr, err := controllers.NewManager(restCfg, mopts, ccfg)
	if err != nil {
		return fmt.Errorf("start manager: %w", err)
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := controllers.RegisterVolumePopulator(ctx, mgr.GetClient()); err != nil {
			ctrl.Log.WithName("setup").Error(err, "VolumePopulator not registered")
		}
		return nil
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "imagerImage", cfg.Image, "maxConcurrentReconciles", concurrency)
	return mgr.Start(ctrl.SetupSignalHandler())
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
