// Package vmdktest writes VMDK images that no free tool writes, for tests:
// ESXi-style vmfs base disks (a descriptor and its -flat.vmdk), seSparse
// snapshot deltas (the format ESXi uses for every snapshot on VMFS6) and
// vmfsSparse (COWD) deltas, together with a model of the content a chain
// of them must read as.
//
// Like net/http/httptest it is test support: production code never
// imports it. It imports nothing but the standard library (not even
// package vmdk), so vmdk's own tests can use it, and every writer streams:
// a 1 GiB chain is written with memory bounded by its grain tables, not
// by its content.
//
// Content is addressed in 4 KiB grains (GrainSize), seSparse's only grain
// size: a [Grain] names one by index and says what the delta holds there.
// [Model] is the expected raw content of a chain, built from the base
// content and each delta's grains (a [Layer]), for tests to compare a
// reader with, and with qemu-img convert.
package vmdktest
