package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Events are not cached (a cluster makes them by the thousand), so the
// controllers list them live: the prime PVC's warnings to copy, and why a
// pod, a Job or a PVC is stuck. Those lists come with every reconcile of
// something that waits, and what waits longest is reconciled most: on the
// local cluster, 200 images whose pods waited for CPU made 5,000 event
// lists. Events are advisory, so each list (a namespace and selector) is
// made at most once per progress interval and served again in between.
// Everything else the live reader does (the reads that confirm a
// refusal, owned.go) goes through untouched.

// rationedEventsReader is a live client.Reader whose event lists are
// rationed.
type rationedEventsReader struct {
	client.Reader
	lists *rations[*corev1.EventList]
}

func rationEventLists(live client.Reader, interval time.Duration) client.Reader {
	return &rationedEventsReader{Reader: live, lists: newRations[*corev1.EventList](interval)}
}

func (r *rationedEventsReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	events, ok := list.(*corev1.EventList)
	if !ok {
		return r.Reader.List(ctx, list, opts...)
	}
	o := (&client.ListOptions{}).ApplyOptions(opts)
	key := o.Namespace + "|"
	if o.FieldSelector != nil {
		key += o.FieldSelector.String()
	}
	key += "|"
	if o.LabelSelector != nil {
		key += o.LabelSelector.String()
	}
	got, err := r.lists.get(key, func() (*corev1.EventList, error) {
		l := &corev1.EventList{}
		return l, r.Reader.List(ctx, l, opts...)
	})
	if got != nil {
		got.DeepCopyInto(events)
	}
	return err
}
