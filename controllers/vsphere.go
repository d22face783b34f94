package controllers

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// An import from vSphere is an import like any other (the same target,
// options and result), whose source is a VM's disk named in --vsphere-*
// flags instead of a path or URL. The Secret and the CA ConfigMap are
// mounted as for an HTTP source. There is no scratch space: the
// datastore transport reads the backing files in place with Range
// requests and nfc streams a streamOptimized disk, neither spools.

// vsphereCredentialKeys are the keys of a vSphere source's Secret that
// are mounted: imager logs in with them, and a bearer token means
// nothing to vSphere.
var vsphereCredentialKeys = []string{"username", "password"}

// vsphereArgs completes args with v as the source, adding the volumes
// it needs, and returns the command line.
func vsphereArgs(args jobapi.ImportArgs, v *v1alpha1.VSphereSource, volumes *[]corev1.Volume, mounts *[]corev1.VolumeMount) []string {
	args.CAFile = mountCA(v.CAConfigMap, volumes, mounts)
	args.CredentialsDir = mountCredentials(v.SecretRef, vsphereCredentialKeys, volumes, mounts)
	vs := &jobapi.VSphereArgs{
		URL:           v.URL,
		Thumbprint:    v.Thumbprint,
		UUID:          v.UUID,
		InventoryPath: v.InventoryPath,
		MoRef:         v.MoRef,
		DiskLabel:     v.DiskLabel,
		Snapshot:      v.Snapshot,
		DeltaFrom:     v.DeltaFrom,
		// The CRD's enum holds jobapi's transports (checked by a spec).
		Transport: string(v.Transport),
	}
	if v.DiskIndex != nil {
		vs.DiskIndex = int64(*v.DiskIndex)
	}
	args.VSphere, args.Source = vs, ""
	return args.Argv()
}

// vsphereStatus is status.vsphere from imager's result (nil: not an
// import from vSphere).
func vsphereStatus(res *jobapi.VSphereResult) *v1alpha1.VSphereStatus {
	if res == nil {
		return nil
	}
	return &v1alpha1.VSphereStatus{
		VMName:        res.VMName,
		DiskLabel:     res.DiskLabel,
		CapacityBytes: res.CapacityBytes,
		BackingFiles:  append([]string(nil), res.BackingFiles...),
		Snapshot:      res.Snapshot,
		Transport:     res.Transport,
		DeltaFrom:     res.DeltaFrom,
		BaseTop:       res.BaseTop,
		// jobapi bounds a chain at 255 links.
		DeltaLinks: int32(min(res.DeltaLinks, 1<<16)),
	}
}

// vsphereResult is status.vsphere back as the result it came from, for
// the PVC's completion record (nil: none).
func vsphereResult(st *v1alpha1.VSphereStatus) *jobapi.VSphereResult {
	if st == nil {
		return nil
	}
	return &jobapi.VSphereResult{
		VMName:        st.VMName,
		DiskLabel:     st.DiskLabel,
		CapacityBytes: st.CapacityBytes,
		BackingFiles:  append([]string(nil), st.BackingFiles...),
		Snapshot:      st.Snapshot,
		Transport:     st.Transport,
		DeltaFrom:     st.DeltaFrom,
		BaseTop:       st.BaseTop,
		DeltaLinks:    int(st.DeltaLinks),
	}
}

// vsphereReadyNote says, in the Ready condition's message, which disk
// an image from vSphere holds: " from Hard disk 1 of VM web01 at
// snapshot before-upgrade (snapshot-12)".
func vsphereReadyNote(res *jobapi.VSphereResult) string {
	if res == nil || res.VMName == "" {
		return ""
	}
	note := " from "
	if res.DiskLabel != "" {
		note += res.DiskLabel + " of "
	}
	note += "VM " + res.VMName
	if res.Snapshot != "" {
		note += " at snapshot " + res.Snapshot
	}
	if res.DeltaFrom != "" {
		note += " (the delta since snapshot " + res.DeltaFrom + ")"
	}
	return note
}
