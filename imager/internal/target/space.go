package target

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// CheckFits refuses to start when a Filesystem volume cannot hold a disk
// of virtual size bytes: a guest may fill its disk, so the file needs all
// of it (jobapi.DiskBytes) from what the filesystem grants. The filesystem
// has already kept its own share out of that; overhead is what the PVC
// size the refusal names allows it (jobapi.RequiredBytes, the rule the
// controllers size PVCs by). reclaim is space the write frees (a previous
// image it replaces).
func CheckFits(dir string, size int64, overhead float64, reclaim int64) error {
	v, err := statVolume(dir, reclaim)
	if err != nil {
		return err
	}
	return v.fits(size, overhead)
}

// volume is what a filesystem grants a new disk file, as statfs said when
// the import started.
type volume struct {
	dir      string
	avail    int64 // free to an unprivileged user, plus what the write frees
	held     int64 // other files, and what the filesystem keeps
	capacity int64 // all of it
}

func statVolume(dir string, reclaim int64) (volume, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return volume{}, fmt.Errorf("%s: %w", dir, err)
	}
	return volume{dir: dir, avail: int64(st.Bavail)*st.Bsize + reclaim,
		held: max(0, (int64(st.Blocks)-int64(st.Bavail))*st.Bsize-reclaim), capacity: int64(st.Blocks) * st.Bsize}, nil
}

// fits refuses a disk of virtual size bytes the volume cannot hold.
func (v volume) fits(size int64, overhead float64) error {
	need := jobapi.DiskBytes(size)
	if need <= v.avail {
		return nil
	}
	return tooSmall("%s: the image's virtual size is %s (%d bytes), %s with its metadata, but the volume has %s available: the PVC must be at least %s (%.0f%% kept for the filesystem)",
		v.dir, human(size), size, human(need), human(v.avail), human(v.pvc(size, overhead)), overhead*100)
}

// pvc is the PVC size that holds a disk of virtual size bytes beside what
// the volume holds already.
func (v volume) pvc(size int64, overhead float64) int64 {
	return jobapi.RequiredBytesOverhead(size, jobapi.Filesystem, overhead) + v.held
}

// largest is the largest virtual size whose disk file fits (-1: none).
func (v volume) largest() int64 {
	lo, hi := int64(-1), max(v.avail, -1) // DiskBytes(n) > n: hi is an upper bound
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if jobapi.DiskBytes(mid) <= v.avail {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// VolumeTooSmall turns ENOSPC writing a disk of need bytes into dir into a
// *TooSmallError when the filesystem could not hold the disk even empty: a
// retry on the same volume runs out the same way. Anything else is
// returned as it is.
func VolumeTooSmall(err error, dir string, need int64) error {
	if need <= 0 || !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return err
	}
	capacity := int64(st.Blocks) * st.Bsize
	if capacity >= need {
		return err
	}
	return &TooSmallError{Msg: fmt.Sprintf("%v: the volume holds %s (%d bytes) in all, but the disk's virtual size is %s (%d bytes): it must be at least that big",
		err, human(capacity), capacity, human(need), need), Err: err}
}

// AllocatedBytes is how many bytes the finished file occupies on disk (a
// block device: its size).
func AllocatedBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
		return st.Blocks * 512
	}
	return fi.Size()
}

// SyncDir makes a rename in dir durable (a directory that cannot be
// synced, EINVAL on some filesystems, is not an error).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func dirOf(path string) string { return filepath.Dir(path) }

// human formats a byte count with a binary unit.
func human(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}
