package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Reading an image back from its files: a short `imager info` Job with the
// image and its chain mounted read-only. Two things need it: the refresh
// annotation (something else wrote to a Ready image), and a Job that
// succeeded but whose result is gone with its pod (pod GC, node drain):
// such a Job did its work, and the files say what it made.

// readBack runs (or finds) the info Job for key and returns its result
// once it has one; done is false while the Job runs. A refused Job (a
// squatter on its name) is a *ForeignObjectError.
func (r *VMDKImageReconciler) readBack(ctx context.Context, img *v1alpha1.VMDKImage, key string) (res *jobapi.Result, done bool, err error) {
	var chain []*v1alpha1.VMDKImage
	if img.Spec.BackingImage != nil {
		var wait *waitReason
		if chain, wait, err = readyChain(ctx, r.Client, img.Namespace, img.Name, img.Spec.BackingImage.Name, v1alpha1.ReasonWaitingForBacking); err != nil || wait != nil {
			return nil, false, err
		}
	}
	volumes, mounts := chainVolumes(append([]*v1alpha1.VMDKImage{img}, chain...))
	p := imagerPod{args: jobapi.InfoArgs{ResultFile: jobapi.ResultPath, Root: imagesDir, Image: imagePath(img.Name)}.Argv(),
		volumes: volumes, mounts: mounts, uid: r.Imager.UID, gid: r.Imager.GID}
	desired := imagerJob(hashedName(img.Name, string(img.UID)+"/"+key, "refresh"), img.Namespace, map[string]string{v1alpha1.LabelImage: img.Name}, p, r.Imager)
	job, created, err := ensureChild(ctx, r.Client, r.APIReader, img, v1alpha1.AnnRefreshJobUID, desired)
	if err != nil || created {
		return nil, false, err
	}
	if finished, _ := jobFinished(job); !finished {
		return nil, false, nil
	}
	res, _, err = jobResult(ctx, r.Client, job)
	if err != nil {
		return nil, false, err
	}
	if res == nil {
		res = &jobapi.Result{Phase: jobapi.Failed, Reason: v1alpha1.ReasonNoResult, Message: "Job " + job.Name + " ended without a result"}
	}
	return res, true, nil
}

// refresh re-reads a Ready image's identity from its files.
func (r *VMDKImageReconciler) refresh(ctx context.Context, img *v1alpha1.VMDKImage, token string) (ctrl.Result, error) {
	st := &img.Status
	res, done, err := r.readBack(ctx, img, token)
	switch {
	case isForeign(err):
		st.Refreshed = token
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventRefreshFailed, "re-reading the image refused: %v", err)
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	case !done:
		return ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	st.Refreshed = token
	if res.Phase != jobapi.Succeeded {
		r.event(img, corev1.EventTypeWarning, v1alpha1.EventRefreshFailed, "re-reading the image failed: %s: %s", res.Reason, jobapi.RedactURL(res.Message))
		return ctrl.Result{}, nil
	}
	setIdentity(st, res)
	r.event(img, corev1.EventTypeNormal, v1alpha1.EventRefreshed, "re-read from its files: CID %s, %d bytes allocated", res.CID, res.AllocatedBytes)
	return ctrl.Result{}, r.checkChain(ctx, img)
}

// resultLost handles a Job that succeeded without a readable result: the
// image is read back from its PVC, and that is the attempt's result.
func (r *VMDKImageReconciler) resultLost(ctx context.Context, img *v1alpha1.VMDKImage, jobName string) (res *jobapi.Result, wait ctrl.Result, err error) {
	res, done, err := r.readBack(ctx, img, "result/"+jobName)
	switch {
	case isForeign(err):
		return &jobapi.Result{Phase: jobapi.Failed, Reason: v1alpha1.ReasonForeignObject, Message: err.Error()}, ctrl.Result{}, nil
	case err != nil:
		return nil, ctrl.Result{}, err
	case !done:
		msg := fmt.Sprintf("Job %s succeeded but its result is gone with its pod: reading the image back from its PVC", jobName)
		r.setCondition(img, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonReadingResult, msg)
		return nil, ctrl.Result{RequeueAfter: progressInterval}, nil
	}
	if res.Phase == jobapi.Succeeded {
		// info reads what the files hold; the attempt wrote them.
		res.Reason = jobapi.ReasonSucceeded
	}
	return res, ctrl.Result{}, nil
}
