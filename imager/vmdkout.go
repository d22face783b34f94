package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// vmdkOptions are qemu-img's -o options for vmdk output.
type vmdkOptions struct {
	subformat vmdk.Subformat
	zeroed    bool
	image     vmdk.ImageOptions
}

func (o vmdkOptions) create(size int64, backing string, pf *pathFlags) vmdk.CreateOptions {
	o.image.Size = size
	c := vmdk.CreateOptions{ImageOptions: o.image, Subformat: o.subformat, ZeroedGrains: o.zeroed, Backing: backing}
	if pf != nil {
		c.BackingOptions = pf.options()
	}
	return c
}

// optionList collects repeated -o flags, each a comma-separated list.
type optionList []string

func (l *optionList) String() string { return strings.Join(*l, ",") }
func (l *optionList) Set(s string) error {
	*l = append(*l, strings.Split(s, ",")...)
	return nil
}

// subformats and adapterTypes are the values vmdk.Create takes: checked
// here too, so a bad -o is a usage error before any work, not a failure
// while creating the output.
var (
	subformats   = []string{string(vmdk.MonolithicSparse), string(vmdk.MonolithicFlat), string(vmdk.TwoGbMaxExtentSparse), string(vmdk.TwoGbMaxExtentFlat), string(vmdk.StreamOptimized)}
	adapterTypes = []string{"ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"}
)

// parseVMDKOptions reads -o values; its errors are usage errors.
func parseVMDKOptions(list optionList) (vmdkOptions, error) {
	o := vmdkOptions{subformat: vmdk.MonolithicSparse}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, usagef("-o %q: want key=value", kv)
		}
		switch k {
		case "subformat":
			if !slices.Contains(subformats, v) {
				return o, usagef("-o subformat=%s: want one of %s", v, strings.Join(subformats, ", "))
			}
			o.subformat = vmdk.Subformat(v)
		case "adapter_type":
			if !slices.ContainsFunc(adapterTypes, func(a string) bool { return strings.EqualFold(a, v) }) {
				return o, usagef("-o adapter_type=%s: want one of %s", v, strings.Join(adapterTypes, ", "))
			}
			o.image.AdapterType = v
		case "hwversion", "toolsversion":
			if v == "" || strings.Trim(v, "0123456789") != "" || len(v) > 10 {
				return o, usagef("-o %s=%s: want a number", k, v)
			}
			if k == "hwversion" {
				o.image.HWVersion = v
			} else {
				o.image.ToolsVersion = v
			}
		case "zeroed_grain":
			if v != "on" && v != "off" {
				return o, usagef("-o zeroed_grain=%s: want on or off", v)
			}
			o.zeroed = v == "on"
		default:
			return o, usagef("-o %s: unknown option (want subformat, adapter_type, hwversion, toolsversion, zeroed_grain)", k)
		}
	}
	if o.zeroed && (o.flat() || o.subformat == vmdk.StreamOptimized) {
		return o, usagef("-o zeroed_grain=on: needs a sparse subformat, not %s", o.subformat)
	}
	return o, nil
}

// flat: the subformat's extents are flat (no grains).
func (o vmdkOptions) flat() bool {
	return o.subformat == vmdk.MonolithicFlat || o.subformat == vmdk.TwoGbMaxExtentFlat
}

// convertToVMDK writes src as a VMDK (see openVMDKTarget).
func convertToVMDK(ctx context.Context, src image, path string, o vmdkOptions, level int, sync bool, report func(int64)) error {
	t, err := openVMDKTarget(path, src.Size(), o, level)
	if err != nil {
		return err
	}
	if t.ordered {
		err = copyInOrder(ctx, src, t.dst, report)
	} else {
		err = copyImage(ctx, src, t.copyTarget, report)
	}
	return t.finish(err, sync)
}

// vmdkTarget is a VMDK being written. It is built in a temporary directory
// beside its path and its files renamed into place (descriptor last) once
// complete, so an interrupted write never leaves an image that looks
// finished.
type vmdkTarget struct {
	copyTarget
	ordered bool // a stream: data must arrive in ascending order
	path    string
	tmpDir  string
	disk    *vmdk.Disk         // sparse and flat subformats
	stream  *vmdk.StreamWriter // streamOptimized
	file    *os.File           // the stream's file
}

func openVMDKTarget(path string, size int64, o vmdkOptions, level int) (*vmdkTarget, error) {
	dir := filepath.Dir(path)
	tmpDir, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, targetOpenErr(err)
	}
	t := &vmdkTarget{path: path, tmpDir: tmpDir}
	tmp := filepath.Join(tmpDir, filepath.Base(path))
	o.image.Size = size
	if o.subformat == vmdk.StreamOptimized {
		t.ordered = true
		if t.file, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			t.stream, err = vmdk.NewStreamWriter(t.file, vmdk.StreamOptions{ImageOptions: o.image, Level: level, ExtentFileName: filepath.Base(path)})
			t.copyTarget = copyTarget{dst: t.stream, holeUnit: chunkSize} // the writer drops zero grains itself
		}
	} else if err = vmdk.Create(tmp, o.create(size, "", nil)); err == nil {
		if t.disk, err = vmdk.Open(tmp, vmdk.Options{ReadWrite: true}); err == nil {
			// Zero blocks of a grain stay unallocated grains; flat extents get holes.
			unit := rawHoleUnit
			if g := t.disk.Extents()[0].GrainSize; g > 0 {
				unit = int(g)
			}
			t.copyTarget = copyTarget{dst: t.disk, holeUnit: unit}
		}
	}
	if err != nil {
		t.finish(err, false)
		return nil, targetOpenErr(err)
	}
	return t, nil
}

// finish completes the image after writes that returned err: on success it
// is closed, made durable with sync, and moved into place; on failure the
// temporary directory is removed. Its own errors are the target's.
func (t *vmdkTarget) finish(err error, sync bool) error {
	defer os.RemoveAll(t.tmpDir)
	if t.stream != nil {
		if cerr := t.stream.Close(); err == nil {
			err = onTarget(cerr)
		}
	}
	if t.file != nil {
		if err == nil && sync {
			err = onTarget(t.file.Sync())
		}
		if cerr := t.file.Close(); err == nil {
			err = onTarget(cerr)
		}
	}
	if t.disk != nil {
		if err == nil && sync {
			err = onTarget(t.disk.Flush())
		}
		if cerr := t.disk.Close(); err == nil {
			err = onTarget(cerr)
		}
	}
	if err != nil {
		return err
	}
	return onTarget(moveImage(t.tmpDir, filepath.Dir(t.path), filepath.Base(t.path)))
}

// moveImage renames the files of the image `name` from tmpDir into dir,
// the descriptor last, then syncs dir.
func moveImage(tmpDir, dir, name string) error {
	entries, err := os.ReadDir(tmpDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != name {
			if err := os.Rename(filepath.Join(tmpDir, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.Rename(filepath.Join(tmpDir, name), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// copyInOrder copies src's data chunks to dst in ascending order (a stream
// cannot seek back); zero ranges are skipped.
func copyInOrder(ctx context.Context, src image, dst io.WriterAt, report func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	chunks := make(chan chunk, 2)
	walkErr := make(chan error, 1)
	go func() {
		walkErr <- walkChunks(ctx, src, chunks)
		close(chunks)
	}()
	buf := make([]byte, chunkSize)
	var done int64
	for c := range chunks {
		if !c.zero {
			b := buf[:c.n]
			_, err := src.ReadAt(b, c.off)
			if err == nil || err == io.EOF {
				_, err = dst.WriteAt(b, c.off)
				err = onTarget(err)
			}
			if err != nil {
				cancel(err)
				for range chunks {
				}
				return err
			}
		}
		done += c.n
		if report != nil {
			report(done)
		}
	}
	if err := <-walkErr; err != nil {
		return err
	}
	if report != nil {
		report(-1)
	}
	return nil
}
