package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// image is what the commands read: a VMDK disk or a raw file.
type image interface {
	io.ReaderAt
	Size() int64
	Close() error
	// Files are the paths the image reads.
	Files() []string
	// BlockStatus returns the mapping of a prefix of [off, off+n).
	BlockStatus(off, n int64) (vmdk.Mapping, error)
}

// pathFlags are the flags every command that opens a VMDK takes.
type pathFlags struct {
	root        string
	unsafePaths bool
}

func (p *pathFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.root, "root", "", "directory extent and parent paths must stay inside (default: each descriptor's own directory)")
	fs.BoolVar(&p.unsafePaths, "unsafe-paths", false, "accept absolute and escaping extent/parent paths (trusted images only)")
}

func (p *pathFlags) options() vmdk.Options {
	if p == nil {
		return vmdk.Options{}
	}
	return vmdk.Options{Root: p.root, AllowUnsafePaths: p.unsafePaths}
}

// openImage opens path as format ("vmdk", "raw", or "" to probe).
func openImage(path, format string, pf *pathFlags) (image, error) {
	if format == "" {
		f, err := vmdk.OpenDataFile(path, os.O_RDONLY) // a FIFO would block os.Open
		if err != nil {
			return nil, err
		}
		_, perr := vmdk.Probe(f)
		f.Close()
		switch {
		case perr == nil:
			format = "vmdk"
		case errors.Is(perr, vmdk.ErrNotVMDK):
			format = "raw"
		default:
			return nil, fmt.Errorf("%s: %w", path, perr)
		}
	}
	switch format {
	case "vmdk":
		d, err := vmdk.Open(path, pf.options())
		if err != nil {
			return nil, err
		}
		return vmdkImage{d}, nil
	case "raw":
		f, err := vmdk.OpenDataFile(path, os.O_RDONLY)
		if err != nil {
			return nil, err
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, err
		}
		return rawImage{f, size}, nil
	}
	return nil, usagef("unknown format %q (want vmdk or raw)", format)
}

// checkFormat checks an image format flag before any work: vmdk, raw or
// "" (probe).
func checkFormat(flagName, format string) error {
	if format != "" && format != "vmdk" && format != "raw" {
		return usagef("%s %q: want vmdk or raw", flagName, format)
	}
	return nil
}

// isDevice reports whether path is a device node.
func isDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0
}

type vmdkImage struct{ *vmdk.Disk }

type rawImage struct {
	*os.File
	size int64
}

func (r rawImage) Size() int64     { return r.size }
func (r rawImage) Files() []string { return []string{r.Name()} }

// checkNotSource refuses an output path that is one of the files the
// source reads: opening it for output would destroy the source. The
// arguments are wrong, but only the filesystem can tell: exit 3, not 2.
func checkNotSource(src image, out string) error {
	fo, err := os.Stat(out)
	if err != nil {
		return nil // does not exist yet
	}
	for _, f := range src.Files() {
		if fi, err := os.Stat(f); err == nil && os.SameFile(fi, fo) {
			return failed(errBadRequest, fmt.Errorf("%s is a file of the source image; pick another output", out))
		}
	}
	return nil
}

// outputFlag is --output=human|json, checked as it is parsed.
type outputFlag string

func outputVar(fs *flag.FlagSet) *outputFlag {
	o := outputFlag("human")
	fs.Var(&o, "output", "output format: human or json")
	return &o
}

func (o *outputFlag) String() string { return string(*o) }
func (o *outputFlag) Set(s string) error {
	if s != "human" && s != "json" {
		return fmt.Errorf("want human or json")
	}
	*o = outputFlag(s)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
