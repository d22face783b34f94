package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
)

// Backing chains: what an image reads must be Ready first, loops and
// too-deep chains fail it, and a child's parentCID must stay its parent's
// CID.

// dependencies returns the images a Job for img mounts (the backing chain,
// or the chain being flattened, nearest first), or why img must wait.
func (r *VMDKImageReconciler) dependencies(ctx context.Context, img *v1alpha1.VMDKImage) ([]*v1alpha1.VMDKImage, *waitReason, error) {
	var first string
	var why string
	switch {
	case img.Spec.BackingImage != nil:
		first, why = img.Spec.BackingImage.Name, v1alpha1.ReasonWaitingForBacking
	case img.Spec.Source != nil && img.Spec.Source.Image != nil:
		first, why = img.Spec.Source.Image.Name, v1alpha1.ReasonWaitingForSource
	default:
		return nil, nil, nil
	}
	return readyChain(ctx, r.Client, img.Namespace, img.Name, first, why)
}

// readyChain walks a backing chain from the image named first: every
// image in it must be Ready, or the caller waits (why is the reason).
// self is the image asking, which may not appear in the chain. The walk
// goes on past an image that is not Ready yet, so a loop is found (and
// fails the image) while its images still wait for one another.
func readyChain(ctx context.Context, c client.Reader, ns, self, first, why string) ([]*v1alpha1.VMDKImage, *waitReason, error) {
	var chain []*v1alpha1.VMDKImage
	var wait *waitReason
	seen := map[string]bool{self: true}
	for name := first; name != ""; {
		if seen[name] {
			return nil, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("image %s is in a backing loop", name), true}, nil
		}
		if len(chain) >= maxChainDepth {
			return nil, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("backing chain deeper than %d images", maxChainDepth), true}, nil
		}
		seen[name] = true
		dep := &v1alpha1.VMDKImage{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, dep); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, firstWait(wait, &waitReason{why, fmt.Sprintf("image %s does not exist yet", name), false}), nil
			}
			return nil, nil, err
		}
		switch {
		case dep.Status.Phase == v1alpha1.PhaseFailed:
			wait = firstWait(wait, &waitReason{v1alpha1.ReasonDependencyFailed, fmt.Sprintf("image %s failed", name), false})
		case !dep.DeletionTimestamp.IsZero():
			wait = firstWait(wait, &waitReason{why, fmt.Sprintf("image %s is being deleted", name), false})
		case dep.Status.Phase != v1alpha1.PhaseReady:
			wait = firstWait(wait, &waitReason{why, fmt.Sprintf("waiting for image %s to be Ready (it is %s)", name, orPending(dep.Status.Phase)), false})
		}
		chain = append(chain, dep)
		name = ""
		if dep.Spec.BackingImage != nil {
			name = dep.Spec.BackingImage.Name
		}
	}
	if wait != nil {
		return nil, wait, nil
	}
	return chain, nil, nil
}

// firstWait keeps the wait nearest the asking image.
func firstWait(have, next *waitReason) *waitReason {
	if have != nil {
		return have
	}
	return next
}

type waitReason struct {
	reason, message string
	fatal           bool // waiting cannot help: the image fails
}

func orPending(p v1alpha1.Phase) v1alpha1.Phase {
	if p == "" {
		return v1alpha1.PhasePending
	}
	return p
}

func (r *VMDKImageReconciler) setWaiting(img *v1alpha1.VMDKImage, w *waitReason) {
	if w.fatal {
		img.Status.Phase = v1alpha1.PhaseFailed
		img.Status.LastError = w.reason + ": " + w.message
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, w.reason, w.message)
		r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, w.reason, w.message)
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventFailed, "%s", w.message)
		return
	}
	img.Status.Phase = v1alpha1.PhasePending
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != w.reason || c.Message != w.message {
		r.event(img, corev1.EventTypeNormal, v1alpha1.EventWaiting, "%s", w.message)
	}
	r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionFalse, w.reason, w.message)
	r.setCondition(img, v1alpha1.ConditionReady, metav1.ConditionFalse, w.reason, w.message)
}

// checkChain sets ChainValid on a child: its parentCID must still be its
// parent's CID.
func (r *VMDKImageReconciler) checkChain(ctx context.Context, img *v1alpha1.VMDKImage) error {
	if img.Spec.BackingImage == nil {
		return nil
	}
	parent := &v1alpha1.VMDKImage{}
	err := r.Get(ctx, types.NamespacedName{Namespace: img.Namespace, Name: img.Spec.BackingImage.Name}, parent)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	switch {
	case apierrors.IsNotFound(err):
		r.chainCondition(img, metav1.ConditionFalse, v1alpha1.ReasonParentChanged, fmt.Sprintf("backing image %s is gone", img.Spec.BackingImage.Name))
	case parent.Status.CID != img.Status.ParentCID:
		r.chainCondition(img, metav1.ConditionFalse, v1alpha1.ReasonParentChanged,
			fmt.Sprintf("parentCID %s does not match backing image %s's CID %s", img.Status.ParentCID, parent.Name, parent.Status.CID))
	default:
		r.chainCondition(img, metav1.ConditionTrue, v1alpha1.ReasonParentCIDMatches, fmt.Sprintf("parentCID matches %s's CID %s", parent.Name, parent.Status.CID))
	}
	return nil
}

func (r *VMDKImageReconciler) chainCondition(img *v1alpha1.VMDKImage, status metav1.ConditionStatus, reason, msg string) {
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha1.ConditionChainValid); status == metav1.ConditionFalse && (c == nil || c.Status != status) {
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventChainBroken, "%s", msg)
	}
	r.setCondition(img, v1alpha1.ConditionChainValid, status, reason, msg)
}
