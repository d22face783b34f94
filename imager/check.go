package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Exit codes of `imager check`, as qemu-img check uses them, plus one for
// a bad command line: 2 and 3 are findings about the image and 1 says the
// image could not be read, so none of them may stand for a typo (a script
// that repairs on 2 or retries on 1 would act on an image nobody checked).
// 64 is EX_USAGE of sysexits.h.
const (
	checkClean   = 0
	checkFailed  = 1 // the check itself could not run
	checkCorrupt = 2
	checkLeaks   = 3
	checkUsage   = 64
)

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	output := outputVar(fs)
	repair := fs.Bool("r", false, "repair what is safe to repair (leaks, a grain table with a valid redundant copy)")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	rep, err := vmdk.Check(ctx, pos[0], vmdk.CheckOptions{Options: pf.options(), Repair: *repair})
	if terminated(err) {
		return err
	}
	if err != nil {
		return &exitError{code: checkFailed, msg: fmt.Sprintf("imager check: %v", err)}
	}
	if *repair && len(rep.Repaired) > 0 {
		// Report the state after repair, listing what was done.
		done := rep.Repaired
		if rep, err = vmdk.Check(ctx, pos[0], vmdk.CheckOptions{Options: pf.options()}); terminated(err) {
			return err
		} else if err != nil {
			return &exitError{code: checkFailed, msg: fmt.Sprintf("imager check: %v", err)}
		}
		rep.Repaired = done
	}
	if *output == "json" {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		for _, s := range rep.Repaired {
			fmt.Fprintf(stdout, "Repaired: %s\n", s)
		}
		for _, s := range rep.Corruptions {
			fmt.Fprintf(stdout, "ERROR: %s\n", s)
		}
		for _, s := range rep.Leaks {
			fmt.Fprintf(stdout, "Leaked: %s\n", s)
		}
		if rep.Clean() {
			fmt.Fprintf(stdout, "No errors were found on the image (%d grains allocated).\n", rep.Grains)
		} else {
			fmt.Fprintf(stdout, "%d errors, %d leaks (%d bytes).\n", len(rep.Corruptions), len(rep.Leaks), rep.LeakedBytes)
		}
	}
	switch {
	case len(rep.Corruptions) > 0:
		return &exitError{code: checkCorrupt}
	case len(rep.Leaks) > 0:
		return &exitError{code: checkLeaks}
	}
	return nil
}
