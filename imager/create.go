package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

func runCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	format := fs.String("f", "vmdk", "image format (vmdk)")
	var options optionList
	fs.Var(&options, "o", "options, repeatable: subformat=...,adapter_type=...,hwversion=...,toolsversion=...,zeroed_grain=on")
	backing := fs.String("b", "", "backing (parent) image; the new image is its delta child")
	backingFormat := fs.String("F", "vmdk", "backing image format (vmdk)")
	quiet := fs.Bool("q", false, "print nothing on success")
	resultFile := resultFlag(fs)
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgsRange(fs, args, 1, 2)
	if err != nil {
		return err
	}
	if *format != "vmdk" || *backingFormat != "vmdk" {
		return usagef("only vmdk images (and vmdk backing files) can be created")
	}
	opts, err := parseVMDKOptions(options)
	if err != nil {
		return err
	}
	var size int64
	switch {
	case len(pos) == 2:
		if size, err = parseSize(pos[1]); err != nil {
			return err
		}
	case *backing == "":
		return usagef("a size is needed without a backing file")
	}
	if *backing != "" && (opts.flat() || opts.subformat == vmdk.StreamOptimized) {
		return usagef("-b: a %s image cannot have a backing file (use a sparse subformat)", opts.subformat)
	}
	err = create(pos[0], opts, size, *backing, &pf)
	if err := withResult("create", *resultFile, pos[0], &pf, err); err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintf(stdout, "Formatting '%s', fmt=vmdk subformat=%s\n", pos[0], opts.subformat)
	}
	return nil
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
		err = volumeTooSmall(targetOpenErr(err), filepath.Dir(path), size)
	}
	return err
}
