package controllers

import (
	"context"
	"fmt"
	"maps"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// The manager both controllers run in, in one place: main.go and the
// envtest suite build it here, so the tests run what ships.
//
// A cluster may hold thousands of PVCs and pods that are none of
// vmdkpop's business. Jobs and pods are cached only when they carry
// LabelManagedBy, which every Job the controllers create (and so every
// pod of it) carries. PVCs cannot be narrowed so: the populator serves
// users' PVCs, which carry nothing of ours; all are cached, without their
// managedFields (the largest part of most objects, never read here).
//
// A narrowed cache is not a trust boundary, and the label is no proof: a
// forged Job without it is only absent from the cache, so ensureChild's
// create meets AlreadyExists and confirmLive reads the Job live and
// refuses it; a forged one with it is in the cache but not recorded, and
// is refused the same way (owned.go).

// indexPodJob indexes pods by the UID of the Job controlling them: the
// Job's pods are looked up by it, and only the Job controller's pods
// match, whatever labels a tenant puts on its own.
const indexPodJob = "metadata.ownerReferences.controller.job"

// Config is what the controllers need besides the manager's own options.
type Config struct {
	Imager ImagerConfig
	// Logs reads imager's progress lines from pod logs (rationed: see
	// rationedLogs).
	Logs PodLogReader
	// DiskUID and DiskGID own the disk.img files the populator writes.
	DiskUID, DiskGID int64
	// Namespaces restricts what the manager watches (all when empty).
	Namespaces []string
	// MaxConcurrentReconciles is how many objects each controller
	// reconciles at once. Safe above 1: controller-runtime never runs
	// two reconciles of one object at once, and every write a reconcile
	// makes is to its own object or children (UID-checked, optimistic
	// where shared, like the PV's claimRef).
	MaxConcurrentReconciles int
}

// CacheOptions is what the manager caches (see above); namespaces, if
// any, restrict it.
func CacheOptions(namespaces []string) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy})
	opts := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&batchv1.Job{}: {Label: managed, Transform: leanJob},
			&corev1.Pod{}:  {Label: managed, Transform: leanPod},
		},
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// leanJob keeps of a cached Job what the controllers read: its metadata,
// status and spec, but not the pod template's spec (they built it; a Job
// is judged by its status and its pods). The controllers never write a
// Job back (create and delete only), so nothing dropped is ever sent.
func leanJob(in any) (any, error) {
	if job, ok := in.(*batchv1.Job); ok {
		job.ManagedFields = nil
		job.Spec.Template.Spec = corev1.PodSpec{}
	}
	return in, nil
}

// leanPod keeps of a cached pod its metadata (owner references: whose it
// is), its status (phase, conditions, container states, the termination
// message holding imager's result), and of its spec only the node and the
// containers' names and images. Pods are never written.
func leanPod(in any) (any, error) {
	if pod, ok := in.(*corev1.Pod); ok {
		pod.ManagedFields = nil
		containers := make([]corev1.Container, len(pod.Spec.Containers))
		for i, c := range pod.Spec.Containers {
			containers[i] = corev1.Container{Name: c.Name, Image: c.Image}
		}
		pod.Spec = corev1.PodSpec{NodeName: pod.Spec.NodeName, Containers: containers}
	}
	return in, nil
}

// managedLabels is labels plus LabelManagedBy: the labels of every Job
// and PVC the controllers create.
func managedLabels(l map[string]string) map[string]string {
	out := maps.Clone(l)
	if out == nil {
		out = map[string]string{}
	}
	out[v1alpha1.LabelManagedBy] = v1alpha1.ManagedBy
	return out
}

// NewManager makes the manager running both controllers with the cache
// above, the indexes they share, and cfg.
func NewManager(restCfg *rest.Config, opts ctrl.Options, cfg Config) (ctrl.Manager, error) {
	opts.Cache = CacheOptions(cfg.Namespaces)
	if cfg.MaxConcurrentReconciles > 0 {
		opts.Controller.MaxConcurrentReconciles = cfg.MaxConcurrentReconciles
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, indexPodJob, func(o client.Object) []string {
		if ref := controllerJob(o); ref != "" {
			return []string{ref}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("index pods by Job: %w", err)
	}
	live := rationEventLists(mgr.GetAPIReader(), progressInterval)
	var logs PodLogReader
	if cfg.Logs != nil {
		logs = rationLogs(cfg.Logs, progressInterval, logReadTimeout)
	}
	if err := (&VMDKImageReconciler{
		Client:    mgr.GetClient(),
		Scheme:    mgr.GetScheme(),
		APIReader: live,
		Recorder:  mgr.GetEventRecorder("vmdkimage-controller"),
		Logs:      logs,
		Imager:    cfg.Imager,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the VMDKImage controller: %w", err)
	}
	if err := (&PopulatorReconciler{
		Client:    mgr.GetClient(),
		APIReader: live,
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("vmdkpop-populator"),
		Logs:      logs,
		Imager:    cfg.Imager,
		DiskUID:   cfg.DiskUID,
		DiskGID:   cfg.DiskGID,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the populator: %w", err)
	}
	return mgr, nil
}

// controllerJob is the UID of the Job controlling o, or "".
func controllerJob(o client.Object) string {
	if ref := metav1.GetControllerOf(o); ref != nil && ref.Kind == "Job" && ref.APIVersion == batchv1.SchemeGroupVersion.String() {
		return string(ref.UID)
	}
	return ""
}
