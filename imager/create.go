package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// createCommand is what create's command line asks for.
type createCommand struct {
	path, backing, resultFile string
	opts                      vmdkOptions
	size                      int64
	quiet                     bool
	paths                     pathFlags
}

func runCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseCreate(args)
	if err != nil {
		return err
	}
	err = create(c.path, c.opts, c.size, c.backing, &c.paths)
	if err := withResult("create", c.resultFile, c.path, &c.paths, err); err != nil {
		return err
	}
	if !c.quiet {
		fmt.Fprintf(stdout, "Formatting '%s', fmt=vmdk subformat=%s\n", c.path, c.opts.subformat)
	}
	return nil
}

// parseCreate reads create's command line; its errors are usage errors.
func parseCreate(args []string) (*createCommand, error) {
	c := &createCommand{}
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	format := fs.String("f", "vmdk", "image format (vmdk)")
	var options optionList
	fs.Var(&options, "o", "options, repeatable: subformat=...,adapter_type=...,hwversion=...,toolsversion=...,zeroed_grain=on")
	fs.StringVar(&c.backing, "b", "", "backing (parent) image; the new image is its delta child")
	backingFormat := fs.String("F", "vmdk", "backing image format (vmdk)")
	fs.BoolVar(&c.quiet, "q", false, "print nothing on success")
	resultFile := resultFlag(fs)
	c.paths.register(fs)
	pos, err := parseArgsRange(fs, args, 1, 2)
	if err != nil {
		return nil, err
	}
	c.path, c.resultFile = pos[0], *resultFile
	if *format != "vmdk" || *backingFormat != "vmdk" {
		return nil, usagef("only vmdk images (and vmdk backing files) can be created")
	}
	if c.opts, err = parseVMDKOptions(options); err != nil {
		return nil, err
	}
	switch {
	case len(pos) == 2:
		if c.size, err = parseSize(pos[1]); err != nil {
			return nil, err
		}
	case c.backing == "":
		return nil, usagef("a size is needed without a backing file")
	}
	if c.backing != "" && (c.opts.flat() || c.opts.subformat == vmdk.StreamOptimized) {
		return nil, usagef("-b: a %s image cannot have a backing file (use a sparse subformat)", c.opts.subformat)
	}
	return c, nil
}

// create makes the image at path. The backing file is opened first, so
// that its errors are the source's (a missing parent is SourceNotFound)
// and everything vmdk.Create reports after is creating the target.
func create(path string, opts vmdkOptions, size int64, backing string, pf *pathFlags) error {
	if backing != "" {
		parent, err := vmdk.Open(backing, pf.options())
		if err != nil {
			return fmt.Errorf("backing file: %w", err)
		}
		if size == 0 {
			size = parent.Size()
		}
		parent.Close()
	}
	err := vmdk.Create(path, opts.create(size, backing, pf))
	if err != nil {
		err = target.VolumeTooSmall(target.MarkOpen(err), filepath.Dir(path), size)
	}
	return err
}
