package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// VolumePopulatorName is the cluster-scoped VolumePopulator that declares
// VMDKImage a valid dataSourceRef kind (volume-data-source-validator
// warns about PVCs naming unregistered kinds).
const VolumePopulatorName = "vmdkpop-vmdkimage"

var volumePopulatorGVK = schema.GroupVersionKind{Group: "populator.storage.k8s.io", Version: "v1beta1", Kind: "VolumePopulator"}

// RegisterVolumePopulator creates the VolumePopulator for VMDKImage when
// the cluster has that CRD; without it, there is nothing to register.
func RegisterVolumePopulator(ctx context.Context, c client.Client) error {
	vp := &unstructured.Unstructured{}
	vp.SetGroupVersionKind(volumePopulatorGVK)
	err := c.Get(ctx, client.ObjectKey{Name: VolumePopulatorName}, vp)
	switch {
	case meta.IsNoMatchError(err):
		return nil // the CRD is not installed
	case err == nil:
		return nil
	case client.IgnoreNotFound(err) != nil:
		return fmt.Errorf("get VolumePopulator: %w", err)
	}
	vp = &unstructured.Unstructured{Object: map[string]any{
		"sourceKind": map[string]any{"group": v1alpha1.GroupVersion.Group, "kind": "VMDKImage"},
	}}
	vp.SetGroupVersionKind(volumePopulatorGVK)
	vp.SetName(VolumePopulatorName)
	if err := c.Create(ctx, vp); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("register VolumePopulator: %w", err)
	}
	return nil
}
