//go:build tools

// Package etcd pins the etcd server that envtest and the local e2e cluster
// run, built from the Go module proxy by hack/k8s-binaries.sh.
package etcd

import _ "go.etcd.io/etcd/server/v3"
