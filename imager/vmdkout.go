package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// vmdkOptions are qemu-img's -o options for vmdk output.
type vmdkOptions struct {
	subformat string
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

func parseVMDKOptions(list optionList) (vmdkOptions, error) {
	o := vmdkOptions{subformat: vmdk.MonolithicSparse}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("-o %q: want key=value", kv)
		}
		switch k {
		case "subformat":
			o.subformat = v
		case "adapter_type":
			o.image.AdapterType = v
		case "hwversion":
			o.image.HWVersion = v
		case "toolsversion":
			o.image.ToolsVersion = v
		case "zeroed_grain":
			if v != "on" && v != "off" {
				return o, fmt.Errorf("-o zeroed_grain=%s: want on or off", v)
			}
			o.zeroed = v == "on"
		default:
			return o, fmt.Errorf("-o %s: unknown option (want subformat, adapter_type, hwversion, toolsversion, zeroed_grain)", k)
		}
	}
	return o, nil
}

// convertToVMDK writes src as a VMDK. The image is built in a temporary
// directory beside path and its files renamed into place (descriptor last)
// once complete, so an interrupted convert never leaves an image that looks
// finished.
func convertToVMDK(src image, path string, o vmdkOptions, level int, sync bool, report func(int64)) error {
	dir := filepath.Dir(path)
	tmpDir, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, filepath.Base(path))
	if o.subformat == vmdk.StreamOptimized {
		err = writeStreamFile(src, tmp, o, level, sync, report)
	} else {
		err = writeVMDK(src, tmp, o, sync, report)
	}
	if err != nil {
		return err
	}
	return moveImage(tmpDir, dir, filepath.Base(path))
}

func writeStreamFile(src image, path string, o vmdkOptions, level int, sync bool, report func(int64)) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	o.image.Size = src.Size()
	w, err := vmdk.NewStreamWriter(f, vmdk.StreamOptions{ImageOptions: o.image, Level: level, ExtentFileName: filepath.Base(path)})
	if err == nil {
		err = copyInOrder(background, src, w, report)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeVMDK creates a sparse or flat image and copies src into it; with
// sync, Flush makes it durable (Close writes the grain tables either way).
func writeVMDK(src image, path string, o vmdkOptions, sync bool, report func(int64)) error {
	if err := vmdk.Create(path, o.create(src.Size(), "", nil)); err != nil {
		return err
	}
	d, err := vmdk.Open(path, &vmdk.Options{ReadWrite: true})
	if err != nil {
		return err
	}
	// Zero blocks of a grain stay unallocated grains; flat extents get holes.
	unit := rawHoleUnit
	if g := d.Extents()[0].GrainSize; g > 0 {
		unit = int(g)
	}
	err = copyImage(background, src, copyTarget{dst: d, holeUnit: unit}, report)
	if err == nil && sync {
		err = d.Flush()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
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
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
