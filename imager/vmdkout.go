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
	image     vmdk.ImageOptions
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
		default:
			return o, fmt.Errorf("-o %s: unknown option (want subformat, adapter_type, hwversion, toolsversion)", k)
		}
	}
	return o, nil
}

// convertToVMDK writes src as a VMDK. The image is written under a
// temporary name and renamed into place once complete, so an interrupted
// convert never leaves a file that looks finished.
func convertToVMDK(src image, path string, o vmdkOptions, level int, sync bool, report func(int64)) error {
	if o.subformat != vmdk.StreamOptimized {
		return fmt.Errorf("subformat %q is not supported for output yet (streamOptimized is)", o.subformat)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	o.image.Size = src.Size()
	w, err := vmdk.NewStreamWriter(tmp, vmdk.StreamOptions{ImageOptions: o.image, Level: level, ExtentFileName: filepath.Base(path)})
	if err == nil {
		err = copyInOrder(background, src, w, report)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes 0600
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
