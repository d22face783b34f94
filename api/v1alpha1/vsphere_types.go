package v1alpha1

// VSphereTransport is how a vSphere disk's bytes are read.
// +kubebuilder:validation:Enum=datastore;nfc
type VSphereTransport string

const (
	// TransportDatastore reads the disk's backing files in place over
	// the datastore's /folder file API (imager's jobapi.TransportDatastore).
	TransportDatastore VSphereTransport = "datastore"
	// TransportNFC streams the disk out of an export lease
	// (jobapi.TransportNFC).
	TransportNFC VSphereTransport = "nfc"
)

// VSphereSource is a VM's virtual disk on a vCenter or an ESXi host. The
// Job logs in with the Secret's credentials, finds the VM and the disk,
// and reads the disk's backing chain (its snapshot deltas and base) with
// nothing installed from VMware.
// +kubebuilder:validation:XValidation:rule="(has(self.uuid) ? 1 : 0) + (has(self.inventoryPath) ? 1 : 0) + (has(self.moref) ? 1 : 0) == 1",message="vsphere: name the VM by exactly one of uuid, inventoryPath or moref"
// +kubebuilder:validation:XValidation:rule="!(has(self.diskIndex) && has(self.diskLabel))",message="vsphere: name the disk by diskIndex or diskLabel, not both"
// +kubebuilder:validation:XValidation:rule="!(has(self.thumbprint) && has(self.caConfigMap))",message="vsphere: trust the server by thumbprint or caConfigMap, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.deltaFrom) || !has(self.transport) || self.transport == 'datastore'",message="vsphere: deltaFrom reads the delta's files on the datastore: transport must be datastore"
// +kubebuilder:validation:XValidation:rule="!has(self.deltaFrom) || !has(self.snapshot) || self.deltaFrom != self.snapshot",message="vsphere: deltaFrom and snapshot are the same: nothing changed between them"
type VSphereSource struct {
	// URL is the SDK endpoint of the vCenter or ESXi host the VM is on:
	// https://vcenter.example.com/sdk (a bare https://host means the
	// same). https only: the Secret's password is sent to it. Credentials
	// go in secretRef, never in the URL.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://')",message="url must start with https://: the SDK endpoint of a vCenter or ESXi host (https://vcenter.example.com/sdk), which is sent the Secret's password"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^https://[^/?#]*@')",message="url must not hold credentials: put the username and password in secretRef's Secret"
	URL string `json:"url"`

	// SecretRef names a Secret in the image's namespace with the keys
	// username (administrator@vsphere.local, or root on an ESXi host) and
	// password: a vSphere account allowed to see the VM and read its
	// disk's files (datastore) or export it (nfc). Only those two keys
	// are mounted; a Secret without one of them keeps the Job's pod from
	// starting (Ready reason MountFailed).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretRef string `json:"secretRef"`

	// Thumbprint pins the server's certificate by its SHA-1 or SHA-256
	// fingerprint, hex digits with or without colons between bytes, as
	// vSphere shows it (the host client's certificate page, or
	// `openssl x509 -noout -fingerprint -sha256`). Without thumbprint or
	// caConfigMap the certificate must chain to one of the system CAs of
	// the imager image.
	// +kubebuilder:validation:MaxLength=95
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){19}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31})$')",message="thumbprint must be the certificate's SHA-1 (20 bytes) or SHA-256 (32 bytes) fingerprint in hex, with a colon between every two digits or none (AB:CD:... or ABCD...)"
	// +optional
	Thumbprint string `json:"thumbprint,omitempty"`

	// CAConfigMap names a ConfigMap whose ca.crt key holds the CAs (or
	// the certificate) to trust for the server: vCenter's VMCA root, from
	// https://vcenter/certs/download.zip.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	CAConfigMap string `json:"caConfigMap,omitempty"`

	// UUID names the VM by its BIOS UUID (config.uuid, the guest's
	// SMBIOS UUID) or its instance UUID (config.instanceUuid, vCenter's
	// own): 8-4-4-4-12 hex digits.
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')",message="uuid must be the VM's BIOS or instance UUID, 8-4-4-4-12 hex digits (4211a0c9-3b2f-9a5e-1c4d-0f6e8a7b9c01)"
	// +kubebuilder:validation:MaxLength=36
	// +optional
	UUID string `json:"uuid,omitempty"`

	// InventoryPath names the VM by its path in the inventory, from the
	// root: /<datacenter>/vm/<folders>/<name> (on an ESXi host,
	// /ha-datacenter/vm/<name>), as `govc ls` prints it.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/') && self.size() > 1",message="inventoryPath must be the VM's path from the inventory root: /<datacenter>/vm/<folders>/<name>"
	// +optional
	InventoryPath string `json:"inventoryPath,omitempty"`

	// MoRef names the VM by its managed object ID: vm-42 on vCenter, 42
	// on an ESXi host (the id in the vSphere client's URL).
	// +kubebuilder:validation:MaxLength=21
	// +kubebuilder:validation:XValidation:rule="self.matches('^(vm-)?[0-9]+$')",message="moref must be the VM's managed object ID: vm-42 on vCenter, 42 on an ESXi host"
	// +optional
	MoRef string `json:"moref,omitempty"`

	// DiskIndex picks the VM's disk by its place among the VM's virtual
	// disks, from 0, in the order vSphere lists the VM's devices (Hard
	// disk 1 is usually 0). Default 0. At most one of diskIndex and
	// diskLabel.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1023
	// +optional
	DiskIndex *int32 `json:"diskIndex,omitempty"`

	// DiskLabel picks the VM's disk by its label, as the vSphere client
	// shows it: "Hard disk 2".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=80
	// +optional
	DiskLabel string `json:"diskLabel,omitempty"`

	// Snapshot reads the disk as it was when this snapshot was taken:
	// its name, or its moref (snapshot-12). Needed for a running VM,
	// which writes to its disk's newest files: only the frozen chain
	// below a snapshot is read, never a file the VM is writing. Without
	// it a powered-off VM is read as it is, and a running one is refused
	// (power it off, or take a snapshot and name it here). A name two
	// snapshots of the VM share is refused: give the moref.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Snapshot string `json:"snapshot,omitempty"`

	// Transport is how the disk's bytes are read. datastore (the
	// default): the backing files in place over the datastore's file API
	// (/folder), a snapshot delta only where it holds data, with several
	// parallel requests; VMFS and NFS datastores. nfc: an export lease
	// (as an OVF export does) streams the disk, which also reaches disks
	// that are not files on a datastore (vSAN).
	// +kubebuilder:default=datastore
	// +optional
	Transport VSphereTransport `json:"transport,omitempty"`

	// DeltaFrom (warm migration) imports only what changed since this
	// earlier snapshot (its name or moref, an ancestor of snapshot, or of
	// the powered-off VM's current snapshot without one): the delta files
	// vSphere wrote since, as a child of spec.backingImage, which must be
	// the image imported at DeltaFrom (same VM, same disk). The image then
	// reads as the disk at snapshot. Needs spec.backingImage, the
	// datastore transport and subformat monolithicSparse.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	DeltaFrom string `json:"deltaFrom,omitempty"`
}

// VSphereStatus is what an import from vSphere read, as imager reported
// it when the import succeeded.
type VSphereStatus struct {
	// VMName is the VM's name.
	// +optional
	VMName string `json:"vmName,omitempty"`
	// DiskLabel is the disk's label ("Hard disk 1").
	// +optional
	DiskLabel string `json:"diskLabel,omitempty"`
	// CapacityBytes is the disk's capacity as vSphere reports it.
	// +optional
	CapacityBytes int64 `json:"capacityBytes,omitempty"`
	// BackingFiles are the datastore paths of the chain read, the top
	// (the file the VM or the snapshot points at) first, the base last:
	// "[datastore1] web01/web01-000001.vmdk". A long chain is shortened
	// in the middle.
	// +listType=atomic
	// +optional
	BackingFiles []string `json:"backingFiles,omitempty"`
	// Snapshot is the snapshot read, "name (moref)"; empty when the VM
	// was read as it is.
	// +optional
	Snapshot string `json:"snapshot,omitempty"`
	// Transport is how the disk was read: datastore or nfc.
	// +optional
	Transport string `json:"transport,omitempty"`
	// DeltaFrom, for a delta import (source.vsphere.deltaFrom), is the
	// snapshot it started from, "name (moref)"; BaseTop the top file of
	// the chain at it (the backing image's source) and DeltaLinks how
	// many links above it were read (the first DeltaLinks of
	// BackingFiles).
	// +optional
	DeltaFrom string `json:"deltaFrom,omitempty"`
	// +optional
	BaseTop string `json:"baseTop,omitempty"`
	// +optional
	DeltaLinks int32 `json:"deltaLinks,omitempty"`
}
