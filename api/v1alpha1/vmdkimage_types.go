package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Subformat is a VMDK createType the controller can write.
// +kubebuilder:validation:Enum=monolithicSparse;monolithicFlat;twoGbMaxExtentSparse;twoGbMaxExtentFlat;streamOptimized
type Subformat string

const (
	MonolithicSparse     Subformat = "monolithicSparse"
	MonolithicFlat       Subformat = "monolithicFlat"
	TwoGbMaxExtentSparse Subformat = "twoGbMaxExtentSparse"
	TwoGbMaxExtentFlat   Subformat = "twoGbMaxExtentFlat"
	StreamOptimized      Subformat = "streamOptimized"
)

// VMDKImageSpec declares a VMDK disk. It cannot change after creation,
// except storage.size, which may grow.
// +kubebuilder:validation:XValidation:rule="has(self.size) || has(self.source)",message="size is required for a blank image (one without a source)"
// +kubebuilder:validation:XValidation:rule="has(self.size) || !has(self.source) || has(self.source.image) || has(self.storage.size)",message="an import needs size or storage.size, so its PVC can be sized before the source is read"
// +kubebuilder:validation:XValidation:rule="!has(self.backingImage) || self.subformat in ['monolithicSparse', 'twoGbMaxExtentSparse']",message="a backing image needs a sparse subformat: monolithicSparse or twoGbMaxExtentSparse"
// +kubebuilder:validation:XValidation:rule="!(has(self.backingImage) && has(self.source)) || (has(self.source.vsphere) && has(self.source.vsphere.deltaFrom))",message="backingImage and source cannot both be set: a child starts empty over its parent (but for source.vsphere.deltaFrom: the delta since the snapshot the backing image was imported at)"
// +kubebuilder:validation:XValidation:rule="!has(self.source) || !has(self.source.vsphere) || !has(self.source.vsphere.deltaFrom) || (has(self.backingImage) && self.subformat == 'monolithicSparse')",message="source.vsphere.deltaFrom writes a monolithicSparse delta over the image imported at that snapshot: set backingImage to that image, and subformat monolithicSparse"
// +kubebuilder:validation:XValidation:rule="self.subformat == oldSelf.subformat",message="subformat is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.size) == has(oldSelf.size) && (!has(self.size) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) == 0)",message="size is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.backingImage) == has(oldSelf.backingImage) && (!has(self.backingImage) || self.backingImage == oldSelf.backingImage)",message="backingImage is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.source) == has(oldSelf.source) && (!has(self.source) || self.source == oldSelf.source)",message="source is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.adapterType) == has(oldSelf.adapterType) && (!has(self.adapterType) || self.adapterType == oldSelf.adapterType)",message="adapterType is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.hwVersion) == has(oldSelf.hwVersion) && (!has(self.hwVersion) || self.hwVersion == oldSelf.hwVersion)",message="hwVersion is immutable"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !(self.subformat in ['monolithicSparse', 'streamOptimized']) || quantity(string(self.size)).compareTo(quantity('2198754230272')) <= 0",message="a monolithicSparse or streamOptimized image is at most 2198754230272 bytes (2 TiB less 256.56 MiB: its single sparse extent, grain tables included, must stay below 2^32 sectors); use twoGbMaxExtentFlat or monolithicFlat",fieldPath=".size"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || self.subformat != 'twoGbMaxExtentSparse' || quantity(string(self.size)).compareTo(quantity('2145336164352')) <= 0",message="a twoGbMaxExtentSparse image is at most 2145336164352 bytes (1998 GiB: 999 extents of 2 GiB); use twoGbMaxExtentFlat or monolithicFlat",fieldPath=".size"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || self.subformat != 'twoGbMaxExtentFlat' || quantity(string(self.size)).compareTo(quantity('68169720922112')) <= 0",message="a twoGbMaxExtentFlat image is at most 68169720922112 bytes (62 TiB), VMware's largest virtual disk",fieldPath=".size"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || self.subformat != 'monolithicFlat' || quantity(string(self.size)).compareTo(quantity('17592186040320')) <= 0",message="a monolithicFlat image is at most 17592186040320 bytes (16 TiB less 4 KiB), the largest file ext4 with 4 KiB blocks holds; use twoGbMaxExtentFlat",fieldPath=".size"
type VMDKImageSpec struct {
	// Size is the virtual disk size. Required for a blank image; for an
	// import or a flatten it defaults to the source's size and may not be
	// smaller. It must be positive. The controller passes it to the Job in
	// whole bytes (resource.Quantity's Value: a fraction rounds up), and
	// the disk written is that rounded up to a multiple of 512 bytes, a
	// sector (vmdk.ImageOptions does it): 1000 makes a 1024-byte disk.
	// Each subformat has a largest size, refused at admission (vmdk.MaxSize
	// holds the same limits):
	//   - monolithicSparse, streamOptimized: 2198754230272 bytes (2 TiB
	//     less 256.56 MiB), one sparse extent whose grain tables hold 32-bit
	//     sector offsets;
	//   - twoGbMaxExtentSparse: 2145336164352 bytes (1998 GiB), 999 extents
	//     of 2 GiB;
	//   - twoGbMaxExtentFlat: 68169720922112 bytes (62 TiB), VMware's
	//     largest virtual disk;
	//   - monolithicFlat: 17592186040320 bytes (16 TiB less 4 KiB), the
	//     largest file ext4 with 4 KiB blocks holds, the common filesystem
	//     of PVCs (XFS holds more, but the limit assumes ext4).
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="size must be positive"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// Subformat is the VMDK createType written.
	// +kubebuilder:default=monolithicSparse
	// +optional
	Subformat Subformat `json:"subformat,omitempty"`

	// AdapterType is the descriptor's ddb.adapterType (the values
	// vmdk.AdapterTypes lists).
	// +kubebuilder:validation:Enum=ide;lsilogic;buslogic;legacyESX;pvscsi
	// +optional
	AdapterType string `json:"adapterType,omitempty"`

	// HWVersion is the descriptor's ddb.virtualHWVersion.
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=99
	// +optional
	HWVersion *int32 `json:"hwVersion,omitempty"`

	// BackingImage makes this image a delta child of another VMDKImage in
	// the namespace; it waits until that image is Ready.
	// +optional
	BackingImage *ImageReference `json:"backingImage,omitempty"`

	// Source fills the image with content; without it the image is blank.
	// +optional
	Source *ImageSource `json:"source,omitempty"`

	// Storage is the PVC the image's files live in.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`
}

// ImageReference names a VMDKImage in the same namespace.
type ImageReference struct {
	// Name of the VMDKImage: at most 63 characters, as VMDKImage names are.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// ImageSource is where an image's content comes from: exactly one of its
// fields.
// +kubebuilder:validation:XValidation:rule="(has(self.http) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.image) ? 1 : 0) + (has(self.vsphere) ? 1 : 0) == 1",message="source: set exactly one of http, pvc, image or vsphere"
type ImageSource struct {
	// HTTP imports a disk (any VMDK, raw, gzip/zstd, or an OVA) from a URL.
	// +optional
	HTTP *HTTPSource `json:"http,omitempty"`
	// PVC imports a VMDK or raw file from another PVC in the namespace.
	// +optional
	PVC *PVCSource `json:"pvc,omitempty"`
	// Image flattens another VMDKImage's backing chain into this image.
	// +optional
	Image *ImageReference `json:"image,omitempty"`
	// VSphere imports a VM's disk from a vCenter or an ESXi host, named
	// as vSphere names it (this VM, this disk, as of this snapshot), with
	// no VDDK.
	// +optional
	VSphere *VSphereSource `json:"vsphere,omitempty"`
}

// HTTPSource is a disk on an HTTP(S) server.
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || self.secretRef.size() == 0 || !self.url.startsWith('http://') || (has(self.insecureAllowCredentialsOverHTTP) && self.insecureAllowCredentialsOverHTTP)",message="secretRef's credentials would be sent over plain http://, where anyone on the path can read them: use an https:// URL, or set insecureAllowCredentialsOverHTTP: true",fieldPath=".secretRef"
type HTTPSource struct {
	// URL of the disk.
	// +kubebuilder:validation:Pattern=`^https?://`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// CAConfigMap names a ConfigMap whose ca.crt key holds extra CAs to
	// trust.
	// +optional
	CAConfigMap string `json:"caConfigMap,omitempty"`
	// SecretRef names a Secret with a "token" key (bearer) or "username"
	// and "password" keys (basic auth).
	// +optional
	SecretRef string `json:"secretRef,omitempty"`
	// InsecureAllowCredentialsOverHTTP lets secretRef's credentials be sent
	// to an http:// URL, in plain text: anyone on the path can read them.
	// Without it, secretRef with an http:// URL is refused.
	// +optional
	InsecureAllowCredentialsOverHTTP bool `json:"insecureAllowCredentialsOverHTTP,omitempty"`
	// Checksum of the downloaded bytes, "sha256:" and 64 hex digits; a
	// mismatch fails the import for good.
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	// +optional
	Checksum string `json:"checksum,omitempty"`
	// OVADisk picks the disk of an OVA: its index from 0, diskId or file
	// name (default the first). An image is one disk: "all" (imager's
	// every-disk mode) is refused; make one VMDKImage per disk.
	// +kubebuilder:validation:XValidation:rule="self != 'all'",message="ovaDisk: an image is one disk: name one (its index from 0, diskId or file name) and make a VMDKImage per disk"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	OVADisk string `json:"ovaDisk,omitempty"`
}

// PVCSource is a file in another PVC.
type PVCSource struct {
	// ClaimName is the PVC, mounted read-only.
	// +kubebuilder:validation:MinLength=1
	ClaimName string `json:"claimName"`
	// Path of the VMDK (its descriptor, for multi-file images) or raw file
	// inside the PVC.
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",message="path must be relative and stay inside the PVC"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Path string `json:"path"`
}

// StorageSpec shapes the image's PVC.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.size) || (has(self.size) && quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0)",message="storage.size may only grow"
type StorageSpec struct {
	// StorageClassName of the PVC (default: the cluster's default class).
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
	// AccessModes of the PVC (default ReadWriteOnce).
	// +optional
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	// Size requested for the PVC (default: what the subformat needs for the
	// virtual size, with headroom). It must be positive.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="storage.size must be positive"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
}

// Phase is where an image is in its life.
// +kubebuilder:validation:Enum=Pending;Creating;Importing;Flattening;Ready;Failed
type Phase string

const (
	PhasePending    Phase = "Pending"
	PhaseCreating   Phase = "Creating"
	PhaseImporting  Phase = "Importing"
	PhaseFlattening Phase = "Flattening"
	PhaseReady      Phase = "Ready"
	PhaseFailed     Phase = "Failed"
)

// Condition types.
const (
	// ConditionReady: the image is complete and usable.
	ConditionReady = "Ready"
	// ConditionProgressing: a Job is working on the image, or it waits.
	ConditionProgressing = "Progressing"
	// ConditionChainValid: the image's parentCID matches its parent's CID.
	ConditionChainValid = "ChainValid"
	// ConditionDeletionBlocked: the image is being deleted but other
	// images (or populations) still need it.
	ConditionDeletionBlocked = "DeletionBlocked"
	// ConditionStorage: the image's PVC is bound and as large as
	// spec.storage.size asks (its reasons say what a resize waits for).
	ConditionStorage = "Storage"
)

// Finalizer keeps an image (and its PVC) while other images need it.
const Finalizer = "storage.vmdkpop.io/chain-protection"

// VMDKImageStatus is what the controller observed.
type VMDKImageStatus struct {
	// Phase summarises the conditions.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// CID is the image's content ID (8 hex digits).
	// +optional
	CID string `json:"cid,omitempty"`
	// ParentCID is the CID of the parent this image was made against
	// ("ffffffff": none).
	// +optional
	ParentCID string `json:"parentCID,omitempty"`
	// CreateType is the descriptor's createType.
	// +optional
	CreateType string `json:"createType,omitempty"`
	// VirtualSize in bytes.
	// +optional
	VirtualSize int64 `json:"virtualSize,omitempty"`
	// AllocatedBytes the image's files occupy.
	// +optional
	AllocatedBytes int64 `json:"allocatedBytes,omitempty"`
	// Progress of the running Job, e.g. "37.5%".
	// +optional
	Progress string `json:"progress,omitempty"`
	// ClaimName is the PVC holding the image (disk.vmdk in its root).
	// +optional
	ClaimName string `json:"claimName,omitempty"`
	// JobName is the Job that writes (or wrote) the image.
	// +optional
	JobName string `json:"jobName,omitempty"`
	// Refreshed is the value of the refresh annotation the status was last
	// re-read from the image's files for.
	// +optional
	Refreshed string `json:"refreshed,omitempty"`
	// Retried is the value of the retry annotation the current attempt
	// was started for.
	// +optional
	Retried string `json:"retried,omitempty"`
	// Attempt numbers the current attempt (from 0): each fresh attempt, a
	// controller retry or one the retry annotation asked for, takes the
	// next, and its Job a new name.
	// +optional
	Attempt int32 `json:"attempt,omitempty"`
	// Retries counts the fresh Jobs the controller started after
	// transient failures (since the image was created or last retried by
	// the annotation); it stops at the manager's retry limit.
	// +optional
	Retries int32 `json:"retries,omitempty"`
	// LastError is why the last attempt failed, kept while the next one
	// runs.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// Capacity is VirtualSize for people ("10Gi").
	// +optional
	Capacity string `json:"capacity,omitempty"`
	// Allocated is AllocatedBytes for people ("12Ki").
	// +optional
	Allocated string `json:"allocated,omitempty"`
	// VSphere is what an import from vSphere read: the VM, the disk, its
	// backing files, the snapshot. Set when the import succeeds (absent
	// if its Job's result was lost and the image was read back instead).
	// +optional
	VSphere *VSphereStatus `json:"vsphere,omitempty"`
}

// AnnotationRetry asks the controller for a fresh attempt at a Failed
// image (or, on a PVC, a failed population), after the cause was fixed:
// set it to a new value; status.retried (the PVC's populator-retried
// annotation) echoes it once the attempt has started.
const AnnotationRetry = "storage.vmdkpop.io/retry"

// AnnotationRefresh asks the controller to re-read a Ready image's CID,
// parentCID and sizes from its files (after something else wrote to it):
// set it to a new value; status.refreshed echoes it when done.
const AnnotationRefresh = "storage.vmdkpop.io/refresh"

// VMDKImage is a VMDK virtual disk kept in a PVC. Its name is at most 63
// characters: the controller uses it as the storage.vmdkpop.io/image label
// value (and in its Job and PVC names and the /images/<name> mount).
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: it is the value of the storage.vmdkpop.io/image label on the image's PVC and Job"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.backingImage) || self.spec.backingImage.name != self.metadata.name",message="an image cannot be its own backing image",fieldPath=".spec.backingImage.name"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.source) || !has(self.spec.source.image) || self.spec.source.image.name != self.metadata.name",message="an image cannot flatten itself",fieldPath=".spec.source.image.name"
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmdk;vmdks,categories=vmdkpop
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Subformat",type=string,JSONPath=`.spec.subformat`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.capacity`
// +kubebuilder:printcolumn:name="Allocated",type=string,JSONPath=`.status.allocated`
// +kubebuilder:printcolumn:name="CID",type=string,JSONPath=`.status.cid`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Bytes",type=integer,JSONPath=`.status.virtualSize`,priority=1
// +kubebuilder:printcolumn:name="Allocated-Bytes",type=integer,JSONPath=`.status.allocatedBytes`,priority=1
// +kubebuilder:printcolumn:name="Retries",type=integer,JSONPath=`.status.retries`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type VMDKImage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VMDKImageSpec   `json:"spec,omitempty"`
	Status VMDKImageStatus `json:"status,omitempty"`
}

// VMDKImageList is a list of VMDKImages.
// +kubebuilder:object:root=true
type VMDKImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VMDKImage `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VMDKImage{}, &VMDKImageList{})
}
