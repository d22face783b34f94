//go:build tools

// Package codegen pins controller-gen, which generates vmdkpop's CRD,
// RBAC and deepcopy code (make generate).
package codegen

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
