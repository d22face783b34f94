package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// runCommit writes an image's own data into its backing file and keeps the
// chain valid (the image is re-linked to the parent's new CID).
func runCommit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("commit", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "print nothing on success")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if err := vmdk.Commit(ctx, pos[0], pf.options()); err != nil {
		return commitReadOnly(pos[0], pf.options(), err)
	}
	if !*quiet {
		fmt.Fprintln(stdout, "Image committed.")
	}
	return nil
}
