package jobapi

import "strconv"

// A vSphere source: a VM's disk on a vCenter or an ESXi host, named the
// way vSphere users name it ("this VM, this disk, as of this snapshot"),
// read without VMware's VDDK. imager resolves it with govmomi and reads
// the disk's backing chain in place over the datastore's /folder API
// (transport datastore) or streams an NFC export lease (transport nfc).

// Transports of a vSphere source.
const (
	TransportDatastore = "datastore"
	TransportNFC       = "nfc"
)

// VSphereArgs are the --vsphere-* flags of `imager import`. With them,
// ImportArgs.Source is empty: the VM is the source. Credentials come from
// ImportArgs.CredentialsDir (username and password files) and extra CAs
// from ImportArgs.CAFile, as for an HTTP source.
type VSphereArgs struct {
	// URL is the SDK endpoint of a vCenter or an ESXi host
	// (https://host/sdk; a bare https://host means the same).
	URL string
	// Thumbprint pins the server's certificate: SHA-1 or SHA-256 of its
	// DER bytes, hex with or without colons, as vSphere shows it.
	Thumbprint string
	// The VM: exactly one of UUID (BIOS or instance UUID), InventoryPath
	// (/DC/vm/folder/name) or MoRef (vm-42).
	UUID          string
	InventoryPath string
	MoRef         string
	// The disk: DiskLabel ("Hard disk 2") or DiskIndex (from 0, in the
	// order of the VM's virtual disks; default 0).
	DiskIndex int64
	DiskLabel string
	// Snapshot (its name, or its moref snapshot-12) reads the disk as of
	// that snapshot; needed for a running VM.
	Snapshot string
	// Transport is datastore (default) or nfc.
	Transport string
	// DeltaFrom (a snapshot's name or moref, an ancestor of Snapshot)
	// imports only what changed since it: the links of the chain above
	// DeltaFrom's, written as a delta VMDK whose parent is
	// ImportArgs.Backing, the image imported at DeltaFrom (warm
	// migration). Transport datastore and a vmdk target only.
	DeltaFrom string
}

func (v *VSphereArgs) flags(a *argv) {
	if v == nil {
		return
	}
	a.str("--vsphere-url", v.URL)
	a.str("--vsphere-thumbprint", v.Thumbprint)
	a.str("--vsphere-uuid", v.UUID)
	a.str("--vsphere-path", v.InventoryPath)
	a.str("--vsphere-moref", v.MoRef)
	a.int("--vsphere-disk-index", v.DiskIndex)
	a.str("--vsphere-disk-label", v.DiskLabel)
	a.str("--vsphere-snapshot", v.Snapshot)
	a.str("--vsphere-transport", v.Transport)
	a.str("--vsphere-delta-from", v.DeltaFrom)
}

// VSphereResult is what an import from vSphere read, for the image's
// status.
type VSphereResult struct {
	VMName string `json:"vmName,omitempty"`
	// InstanceUUID is the VM's instance UUID and DiskKey the disk's
	// device key: with Snapshot's moref and the top of BackingFiles,
	// what a VMDK target is stamped with (its provenance, which a delta
	// import checks its base against).
	InstanceUUID string `json:"instanceUuid,omitempty"`
	DiskLabel    string `json:"diskLabel,omitempty"`
	DiskKey      int32  `json:"diskKey,omitempty"`
	// CapacityBytes is the disk's capacity as vSphere reports it.
	CapacityBytes int64 `json:"capacityBytes,omitempty"`
	// BackingFiles are the datastore paths of the chain read, the top
	// (the file the VM or snapshot points at) first, the base last
	// ("[datastore1] vm/vm-000001.vmdk"). Write shortens a long list.
	BackingFiles []string `json:"backingFiles,omitempty"`
	// Snapshot is the snapshot read, "name (moref)"; empty for a VM read
	// as it is (powered off).
	Snapshot  string `json:"snapshot,omitempty"`
	Transport string `json:"transport,omitempty"`
	// DeltaFrom is the snapshot a delta import started from, "name
	// (moref)"; BaseTop the top file of the chain as of it, whose chain
	// (the last files of BackingFiles) the backing image must have been
	// imported from; DeltaLinks how many links above it were copied (the
	// first DeltaLinks of BackingFiles).
	DeltaFrom  string `json:"deltaFrom,omitempty"`
	BaseTop    string `json:"baseTop,omitempty"`
	DeltaLinks int    `json:"deltaLinks,omitempty"`
}

// maxBackingFiles bounds the list a result carries: a termination message
// holds at most 4096 bytes, and a chain may be 255 links deep.
const maxBackingFiles = 8

// bounded returns v with its backing files cut to the top ones and the
// base, the gap named, each name at most 160 bytes.
func (v *VSphereResult) bounded() *VSphereResult {
	if v == nil {
		return nil
	}
	c := *v
	files := v.BackingFiles
	if len(files) > maxBackingFiles {
		cut := append([]string{}, files[:maxBackingFiles-2]...)
		cut = append(cut, "... "+strconv.Itoa(len(files)-(maxBackingFiles-1))+" more ...", files[len(files)-1])
		files = cut
	}
	c.BackingFiles = make([]string, len(files))
	for i, f := range files {
		if len(f) > 160 {
			f = f[:157] + "..."
		}
		c.BackingFiles[i] = f
	}
	if len(c.InstanceUUID) > 40 { // a UUID is 36
		c.InstanceUUID = c.InstanceUUID[:37] + "..."
	}
	// A delta import's two names and the disk's label (short in vSphere:
	// "Hard disk 2") get less room: with everything else at its longest,
	// 160 bytes each would pass 4096.
	for _, s := range []*string{&c.DeltaFrom, &c.BaseTop, &c.DiskLabel} {
		if len(*s) > 80 {
			*s = (*s)[:77] + "..."
		}
	}
	for _, s := range []*string{&c.VMName, &c.Snapshot} {
		if len(*s) > 160 {
			*s = (*s)[:157] + "..."
		}
	}
	return &c
}
