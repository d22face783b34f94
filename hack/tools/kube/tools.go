//go:build tools

// Package kube pins the Kubernetes components vmdkpop's tests run
// (kube-apiserver for envtest; the rest for the local e2e cluster), built
// from the Go module proxy by hack/k8s-binaries.sh. It is its own module so
// k8s.io/kubernetes's replace directives stay out of the project's go.mod.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
