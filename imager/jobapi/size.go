package jobapi

// ResultPath is where a Job's imager writes its result: the container's
// termination-message file, which the kubelet copies into the pod status.
const ResultPath = "/dev/termination-log"

// FSOverhead is the share of a Filesystem volume its filesystem may keep
// for itself (metadata, journal, reserved blocks, the image file's own
// block maps), as KubeVirt CDI assumes; imager's --fs-overhead default.
const FSOverhead = 0.06

// VolumeMode is how a PVC's volume reaches imager.
type VolumeMode int

const (
	// Filesystem: a directory; the disk is a file in it.
	Filesystem VolumeMode = iota
	// Block: a device; the disk is its content.
	Block
)

const mib = 1 << 20

// fsFixed is room for a filesystem's structures that do not scale with the
// volume (a journal, a superblock per group): on small volumes they are
// far more than FSOverhead of it.
const fsFixed = 16 * mib

// DiskBytes is the most a disk of virtual bytes occupies as a file: all
// of its virtual size (a guest may fill its disk) and, when it is a sparse
// VMDK, its grain tables with their redundant copy (4 bytes per 64 KiB
// grain each) and a MiB for the header and grain directories. Imager's
// fits-check asks the filesystem for this much.
func DiskBytes(virtual int64) int64 {
	return virtual + virtual/(64<<10)*4*2 + mib
}

// RequiredBytes is the size a PVC must request to hold a disk of virtual
// bytes: a Block volume the disk itself; a Filesystem volume the disk as a
// file (DiskBytes) once its filesystem kept FSOverhead and its fixed
// structures, rounded up to a MiB. A volume that big passes imager's
// fits-check when its filesystem keeps no more than that.
func RequiredBytes(virtual int64, mode VolumeMode) int64 {
	return RequiredBytesOverhead(virtual, mode, FSOverhead)
}

// RequiredBytesOverhead is RequiredBytes with a filesystem keeping overhead
// (a fraction in [0, 1)) instead of FSOverhead: imager's --fs-overhead.
func RequiredBytesOverhead(virtual int64, mode VolumeMode, overhead float64) int64 {
	if mode == Block {
		return virtual
	}
	need := int64(float64(DiskBytes(virtual))/(1-overhead)) + fsFixed
	return (need + mib - 1) / mib * mib
}
