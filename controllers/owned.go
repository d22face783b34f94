package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Children are found by deterministic names, but a name proves nothing: a
// tenant can create a PVC or a Job with any name in its own namespace,
// with any labels and ownerReferences. So every child the controllers
// create has its UID recorded on its owner at once, under an annotation
// of its own, and only the object with that UID is ever used, updated or
// deleted. An object squatting on the name is refused.
//
// Reads go through the manager's cache, which may not hold the
// controller's own latest writes yet (the child it just created, the UID
// it just recorded): before refusing an object, the owner and the child
// are read live, so a refusal is never the cache's lag.

// recordTimeout bounds recording a created child's UID (or taking the
// child back), which a cancelled reconcile still does.
const recordTimeout = 10 * time.Second

// ForeignObjectError says an object holds a name the controller derives
// for a child, but is not the child it recorded.
type ForeignObjectError struct {
	Kind, Name string
}

func (e *ForeignObjectError) Error() string {
	return fmt.Sprintf("%s %s was not created by vmdkpop for this object: refusing to use it (delete it to let vmdkpop create its own)", e.Kind, e.Name)
}

// isForeign reports whether err is a refusal of a foreign object.
func isForeign(err error) bool {
	var fe *ForeignObjectError
	return errors.As(err, &fe)
}

// ensureChild returns the child recorded under key on owner: the existing
// object named like desired if its UID is the recorded one, otherwise
// desired itself, created (controlled by owner) and recorded; created
// tells which. A squatter on the name is a *ForeignObjectError.
func ensureChild[T any, P interface {
	*T
	client.Object
}](ctx context.Context, c client.Client, live client.Reader, owner client.Object, key string, desired P) (child P, created bool, err error) {
	existing := P(new(T))
	err = getChild(ctx, c, live, owner, key, desired.GetName(), existing)
	if err == nil || !apierrors.IsNotFound(err) {
		return existing, false, err
	}
	kind := kindOf(desired, c.Scheme())
	if err := ctrl.SetControllerReference(owner, desired, c.Scheme()); err != nil {
		return nil, false, err
	}
	if err := c.Create(ctx, desired); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Not in the cache, but there: ours if the owner says so.
			return existing, false, confirmLive(ctx, c, live, owner, key, desired.GetName(), existing)
		}
		return nil, false, fmt.Errorf("create %s %s: %w", kind, desired.GetName(), err)
	}
	// A created child must be recorded, or taken back: unrecorded, it
	// would be refused as foreign from now on. A manager shutting down
	// (its context cancelled) still does that much.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := recordUID(ctx, c, owner, key, desired.GetUID()); err != nil {
		// Take it back and let the next reconcile start again.
		uid := desired.GetUID()
		derr := c.Delete(ctx, desired, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground))
		return nil, false, errors.Join(fmt.Errorf("record %s %s on its owner: %w", kind, desired.GetName(), err), client.IgnoreNotFound(derr))
	}
	return desired, true, nil
}

// getChild reads the child named name into into and checks it is the one
// recorded under key on owner: NotFound when there is no such object, a
// *ForeignObjectError when there is one but it is not the recorded child.
func getChild(ctx context.Context, c client.Client, live client.Reader, owner client.Object, key, name string, into client.Object) error {
	if err := c.Get(ctx, types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}, into); err != nil {
		return err
	}
	if recorded(owner, key, into) {
		return nil
	}
	return confirmLive(ctx, c, live, owner, key, name, into)
}

// confirmLive reads the owner and the child named name (into into) past
// the cache, and returns nil if the child is the one recorded on the
// owner, a *ForeignObjectError if not (NotFound if there is no child).
func confirmLive(ctx context.Context, c client.Client, live client.Reader, owner client.Object, key, name string, into client.Object) error {
	foreign := &ForeignObjectError{Kind: kindOf(into, c.Scheme()), Name: name}
	if live == nil {
		return foreign
	}
	o := owner.DeepCopyObject().(client.Object)
	if err := live.Get(ctx, client.ObjectKeyFromObject(owner), o); err != nil {
		return fmt.Errorf("read %s live: %w", owner.GetName(), err)
	}
	if err := live.Get(ctx, types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}, into); err != nil {
		return err
	}
	if !recorded(o, key, into) {
		return foreign
	}
	return nil
}

// recorded reports whether child's UID is the one recorded under key on
// owner.
func recorded(owner client.Object, key string, child client.Object) bool {
	uid := owner.GetAnnotations()[key]
	return uid != "" && types.UID(uid) == child.GetUID()
}

// deleteChild deletes the child recorded under key on owner, if it still
// exists: by name, with the recorded UID as a precondition, so a squatter
// on the name is never touched.
func deleteChild(ctx context.Context, c client.Client, owner, obj client.Object, key string) error {
	recorded := types.UID(owner.GetAnnotations()[key])
	if recorded == "" {
		return nil
	}
	obj.SetNamespace(owner.GetNamespace())
	err := c.Delete(ctx, obj, client.Preconditions{UID: &recorded}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or the name now holds something else: not ours
	}
	return err
}

// recordUID sets owner's annotation key to uid with a merge patch (no
// conflict with other writers). The patch is made on a copy, so the
// caller's in-memory status survives; only annotations and
// resourceVersion are brought back.
func recordUID(ctx context.Context, c client.Client, owner client.Object, key string, uid types.UID) error {
	cp := owner.DeepCopyObject().(client.Object)
	patch := client.MergeFrom(owner.DeepCopyObject().(client.Object))
	ann := cp.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[key] = string(uid)
	cp.SetAnnotations(ann)
	if err := c.Patch(ctx, cp, patch); err != nil {
		return err
	}
	owner.SetAnnotations(cp.GetAnnotations())
	owner.SetResourceVersion(cp.GetResourceVersion())
	return nil
}

func kindOf(obj client.Object, scheme *runtime.Scheme) string {
	if gvks, _, err := scheme.ObjectKinds(obj); err == nil && len(gvks) > 0 {
		return gvks[0].Kind
	}
	t := fmt.Sprintf("%T", obj)
	return t[strings.LastIndex(t, ".")+1:]
}
