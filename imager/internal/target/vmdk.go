package target

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// vmdkImage is a VMDK being written. It is built in a temporary directory
// beside its path and its files renamed into place (descriptor last) once
// complete, so an interrupted write never leaves an image that looks
// finished.
type vmdkImage struct {
	path     string
	tmpDir   string
	sync     bool
	holeUnit int
	disk     *vmdk.Disk         // sparse and flat subformats
	stream   *vmdk.StreamWriter // streamOptimized
	file     *os.File           // the stream's file
	out      *writeOut          // its write-out, nil unless sync
	lock     *os.File           // tmpDir, flocked while this attempt is alive
}

func openVMDK(path string, size int64, o Options) (*vmdkImage, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), tempPattern(path, tempDirSuffix))
	if err != nil {
		return nil, MarkOpen(err)
	}
	t := &vmdkImage{path: path, tmpDir: tmpDir, sync: o.Sync}
	if t.lock, err = os.Open(tmpDir); err == nil {
		lockTemp(t.lock) // without flock, a later attempt leaves it alone
	}
	tmp := filepath.Join(tmpDir, filepath.Base(path))
	dropCache(path)
	c := o.VMDK
	c.Size = size
	if c.Subformat == vmdk.StreamOptimized {
		if t.file, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			t.out = newWriteOut(t.file, o.Sync)
			t.stream, err = vmdk.NewStreamWriter(&streamFile{f: t.file, out: t.out}, vmdk.StreamOptions{ImageOptions: c.ImageOptions, Level: o.Level, ExtentFileName: filepath.Base(path)})
			t.holeUnit = len(zeros) // the writer drops zero grains itself
		}
	} else if err = vmdk.Create(tmp, c); err == nil {
		if t.disk, err = vmdk.Open(tmp, vmdk.Options{ReadWrite: true}); err == nil {
			// Zero blocks of a grain stay unallocated grains; flat extents get holes.
			t.holeUnit = rawHoleUnit
			if g := t.disk.Extents()[0].GrainSize; g > 0 {
				t.holeUnit = int(g)
			}
		}
	}
	if err != nil {
		t.Abort()
		return nil, MarkOpen(err)
	}
	return t, nil
}

func (t *vmdkImage) WriteAt(p []byte, off int64) (int, error) {
	var n int
	var err error
	if t.stream != nil {
		n, err = t.stream.WriteAt(p, off)
	} else {
		n, err = t.disk.WriteAt(p, off)
	}
	return n, Mark(err)
}

func (t *vmdkImage) Zero(off, n int64) error { return nil } // created empty
func (t *vmdkImage) HoleUnit() int           { return t.holeUnit }
func (t *vmdkImage) Ordered() bool           { return t.stream != nil }
func (t *vmdkImage) Path() string            { return t.path }

// Finish closes the image, makes it durable and moves it into place.
func (t *vmdkImage) Finish(size int64) error {
	defer t.removeTemp()
	var err error
	if t.stream != nil {
		err = t.stream.Close()
	}
	if werr := t.out.stop(); err == nil {
		err = werr
	}
	if t.file != nil {
		if err == nil && t.sync {
			err = syncFile(t.file)
		}
		if cerr := t.file.Close(); err == nil {
			err = cerr
		}
	}
	if t.disk != nil {
		closeDisk := t.disk.Close
		if t.sync {
			if err == nil {
				err = t.disk.Flush()
			}
		} else {
			// -t unsafe: Close's sync of the grains before their tables
			// is a device flush qemu-img's no-flush mode does not make.
			closeDisk = t.disk.CloseUnsynced
		}
		if cerr := closeDisk(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = moveImage(t.tmpDir, filepath.Dir(t.path), filepath.Base(t.path), t.sync)
	}
	return Mark(err)
}

// Abort drops the half-written image.
func (t *vmdkImage) Abort() {
	t.out.stop() // no write-out of what is dropped
	if t.stream != nil {
		t.stream.Close()
	}
	if t.file != nil {
		t.file.Close()
	}
	if t.disk != nil {
		t.disk.CloseUnsynced() // removed next: nothing to order on disk
	}
	t.removeTemp()
}

func (t *vmdkImage) removeTemp() {
	os.RemoveAll(t.tmpDir)
	if t.lock != nil {
		t.lock.Close()
	}
}

func (t *vmdkImage) Describe(r *jobapi.Result) { DescribeVMDK(r, t.path, vmdk.Options{}) }

// DescribeVMDK records what the VMDK at path holds.
func DescribeVMDK(r *jobapi.Result, path string, o vmdk.Options) error {
	d, err := vmdk.Open(path, o)
	if err != nil {
		return err
	}
	defer d.Close()
	r.VirtualSize = d.Size()
	r.AllocatedBytes = d.AllocatedBytes()
	r.CreateType = d.CreateType()
	r.CID = fmt.Sprintf("%08x", d.CID())
	r.ParentCID = fmt.Sprintf("%08x", d.ParentCID())
	r.Target, r.TargetFormat = path, "vmdk"
	return nil
}

// streamFile is the stream's file: written in order, so its write-out's
// watermark is what has been written.
type streamFile struct {
	f   *os.File
	off int64
	out *writeOut
}

func (s *streamFile) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if werr := s.out.wrote(s.off, int64(n)); err == nil {
		err = werr
	}
	s.off += int64(n)
	return n, err
}

// moveImage moves the files of the image `name` from tmpDir into dir
// (replace), the descriptor last, then syncs dir when the image is to be
// durable (-t unsafe flushes nothing, as qemu-img's default).
func moveImage(tmpDir, dir, name string, sync bool) error {
	entries, err := os.ReadDir(tmpDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != name {
			if err := replace(filepath.Join(tmpDir, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := replace(filepath.Join(tmpDir, name), filepath.Join(dir, name)); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	return syncDir(dir)
}
