package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// Deleting an image: its finalizer holds it while other images or
// populations need it; its PVC and Jobs go with it as owned children.

// finalize lets a deleted image go once no other image needs it.
func (r *VMDKImageReconciler) finalize(ctx context.Context, img *v1alpha1.VMDKImage) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(img, v1alpha1.Finalizer) {
		return ctrl.Result{}, nil
	}
	users, err := r.users(ctx, img)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(users) > 0 {
		msg := fmt.Sprintf("deletion waits: %v still need this image", users)
		if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionDeletionBlocked); c == nil || c.Message != msg {
			r.event(img, corev1.EventTypeWarning, v1alpha1.EventDeleteBlocked, "%s", msg)
			r.setCondition(img, v1alpha1.ConditionDeletionBlocked, metav1.ConditionTrue, v1alpha1.ReasonChildrenExist, msg)
			if err := r.Status().Update(ctx, img); err != nil && !apierrors.IsConflict(err) {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, nil // a watch on the users brings us back
	}
	controllerutil.RemoveFinalizer(img, v1alpha1.Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, img))
}

// users lists the images that need img: its children (always), and the
// images flattening it (until they are done). An image never needs
// itself, and a user being deleted that holds nothing of img needs it no
// more: so a backing loop (a backs b backs a), whose images all failed,
// and a namespace deleted at once, never deadlock on each other's
// finalizers.
func (r *VMDKImageReconciler) users(ctx context.Context, img *v1alpha1.VMDKImage) ([]string, error) {
	var out []string
	for _, idx := range []string{indexBacking, indexSource} {
		list := &v1alpha1.VMDKImageList{}
		if err := r.List(ctx, list, client.InNamespace(img.Namespace), client.MatchingFields{idx: img.Name}); err != nil {
			return nil, err
		}
		for _, u := range list.Items {
			done := u.Status.Phase == v1alpha1.PhaseReady || u.Status.Phase == v1alpha1.PhaseFailed
			switch {
			case u.UID == img.UID:
				continue
			case idx == indexSource && done:
				continue
			case !u.DeletionTimestamp.IsZero() && holdsNothing(u.Status.Phase):
				continue
			}
			out = append(out, u.Name)
		}
	}
	// And the PVCs populating from it. The images below it in its chain
	// need no check of their own: img is their child, and a Ready child
	// holds its parent until it is gone itself, even while being deleted
	// (holdsNothing), so a population holds the whole chain.
	live := r.APIReader
	if live == nil {
		live = r.Client
	}
	pops, err := populationsOf(ctx, live, img.Namespace, img.Name)
	return append(out, pops...), err
}

// holdsNothing reports whether an image in phase p has no content of
// img's in it nor a Job reading img: it never got that far (waiting, or
// failed). A Ready child being deleted still holds its parent until it
// is gone, as a chain deleted at once goes top down.
func holdsNothing(p v1alpha1.Phase) bool {
	return p == "" || p == v1alpha1.PhasePending || p == v1alpha1.PhaseFailed
}
