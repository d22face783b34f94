package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
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
	// remote, for commands that also read http(s) URLs (registerRemote).
	remote *remoteFlags
}

// remoteFlags are the HTTP flags (import's, the same set) of a command
// that reads a VMDK from an http(s) URL, and the context its reads stop
// with.
type remoteFlags struct {
	http source.HTTPOptions
	ctx  context.Context
	log  io.Writer
}

// registerRemote makes the command read http(s) URLs too, with import's
// HTTP flags.
func (p *pathFlags) registerRemote(fs *flag.FlagSet) {
	p.remote = &remoteFlags{ctx: context.Background(), log: io.Discard}
	httpFlags(fs, &p.remote.http)
}

// start gives a command's context and log to its remote reads.
func (p *pathFlags) start(ctx context.Context, log io.Writer) {
	if p.remote != nil {
		p.remote.ctx, p.remote.log = ctx, log
	}
}

// isURL: the source is an http(s) URL, not a path. A URL's scheme is
// case-insensitive (RFC 3986 3.1): HTTPS://host/vm.vmdk is a URL too, and
// taking it for a path would skip the URL's checks (credentials in it).
func isURL(s string) bool {
	for _, scheme := range []string{"http://", "https://"} {
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return true
		}
	}
	return false
}

// openRemoteVMDK opens the VMDK at an http(s) URL in place: its
// descriptor, extents and parents are siblings of the URL, read with
// Range requests (source.HTTPFS). Extent and parent names must stay in
// the descriptor's directory: --root and --unsafe-paths name local
// directories and are refused.
func openRemoteVMDK(rawURL string, pf *pathFlags) (*vmdk.Disk, error) {
	if pf == nil || pf.remote == nil {
		return nil, failed(errBadRequest, fmt.Errorf("%s: this command reads local files (convert, info and import read http(s) URLs)", jobapi.RedactURL(rawURL)))
	}
	if err := localPathFlagsOnly(rawURL, pf); err != nil {
		return nil, err
	}
	if err := checkHTTPOptions(pf.remote.http); err != nil {
		return nil, asUsage(err)
	}
	fsys, name, err := source.OpenHTTPFS(pf.remote.ctx, rawURL, pf.remote.http, pf.remote.log)
	if err != nil {
		return nil, err
	}
	d, err := vmdk.OpenFS(fsys, name, vmdk.Options{})
	return d, inRemote(rawURL, err)
}

// localPathFlagsOnly refuses --root and --unsafe-paths for a VMDK at an
// http(s) URL: they name local directories, and a VMDK read over http(s)
// reads only the files beside its descriptor.
func localPathFlagsOnly(rawURL string, pf *pathFlags) error {
	if pf.root != "" || pf.unsafePaths {
		return failed(errBadRequest, fmt.Errorf("%s: --root and --unsafe-paths apply to local files: a VMDK read over http(s) reads only the files beside its descriptor", jobapi.RedactURL(rawURL)))
	}
	return nil
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
	if isURL(path) {
		if format == "raw" {
			return nil, failed(errBadRequest, fmt.Errorf("%s: a raw image is read over http(s) by import, not here", jobapi.RedactURL(path)))
		}
		d, err := openRemoteVMDK(path, pf)
		if err != nil {
			return nil, err
		}
		return vmdkImage{d}, nil
	}
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
