package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

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
	fs.SetOutput(io.Discard)
	pos, err := parseArgsRange(fs, args, 1, 2)
	if err != nil {
		return err
	}
	if *format != "vmdk" || *backingFormat != "vmdk" {
		return fmt.Errorf("only vmdk images (and vmdk backing files) can be created")
	}
	opts, err := parseVMDKOptions(options)
	if err != nil {
		return err
	}
	var size int64
	if len(pos) == 2 {
		if size, err = parseSize(pos[1]); err != nil {
			return err
		}
	} else if *backing == "" {
		return fmt.Errorf("a size is needed without a backing file")
	}
	err = vmdk.Create(pos[0], opts.create(size, *backing, &pf))
	if err := withResult("create", *resultFile, pos[0], &pf, err); err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintf(stdout, "Formatting '%s', fmt=vmdk subformat=%s\n", pos[0], opts.subformat)
	}
	return nil
}

// parseSize reads qemu-img sizes: bytes, or a number with a binary suffix
// k, M, G, T, P (case-insensitive, optional "B"/"iB").
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	shift := 0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGTP", t[n-1]); i >= 0 {
			shift, t = 10*(i+1), t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(int64(1)<<shift) > 1<<62 {
		return 0, fmt.Errorf("size %q: want bytes or a number with a k, M, G, T or P suffix", s)
	}
	return int64(v * float64(int64(1)<<shift)), nil
}
