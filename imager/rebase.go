package main

import (
	"context"
	"flag"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// runRebase changes an image's backing file, keeping its content unless -u.
func runRebase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rebase", flag.ContinueOnError)
	backing := fs.String("b", "", "new backing file (empty: none, the image becomes self-contained)")
	backingFormat := fs.String("F", "vmdk", "backing file format (vmdk)")
	unsafe := fs.Bool("u", false, "unsafe: only rewrite the backing file name and CID, copy no data")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *backingFormat != "vmdk" {
		return usagef("-F %q: backing files are vmdk", *backingFormat)
	}
	return vmdk.Rebase(ctx, pos[0], *backing, vmdk.RebaseOptions{Options: pf.options(), Unsafe: *unsafe})
}
