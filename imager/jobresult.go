package main

import (
	"flag"
	"fmt"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/result"
)

// resultFlag registers --result-file on the commands Jobs run (create,
// convert, flatten, info; import has its own default). Commands that take
// it are marked results in the command table.
func resultFlag(fs *flag.FlagSet) *string {
	return fs.String("result-file", "", "write the result JSON (imager/result) here, e.g. "+result.ResultPath)
}

// settle fills r's phase, reason and message from a command's outcome and
// returns the exit code: classify and exitCode decide both.
func settle(r *result.Result, err error, success string) int {
	if err == nil {
		r.Phase, r.Reason, r.Message = result.Succeeded, result.ReasonSucceeded, success
		return result.ExitOK
	}
	reason, perm := classify(err)
	r.Phase, r.Reason, r.Message, r.Permanent = result.Failed, reason, err.Error(), perm
	return exitCode(err)
}

// describeVMDK records what the VMDK at path holds.
func describeVMDK(r *result.Result, path string, pf *pathFlags) error {
	return target.DescribeVMDK(r, path, pf.options())
}

// withResult ends a command that wrote the VMDK at out: with a result
// file, the outcome goes there. Without one err is returned as it is; run
// maps it to the same exit code either way.
func withResult(cmd, resultPath, out string, pf *pathFlags, err error) error {
	if resultPath == "" {
		return err
	}
	var r result.Result
	if err == nil {
		err = describeVMDK(&r, out, pf)
	}
	code := settle(&r, err, "wrote "+out)
	if werr := result.Write(resultPath, &r); werr != nil && err == nil {
		return fmt.Errorf("result file: %w", werr)
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code, msg: fmt.Sprintf("imager %s: %v", cmd, err)}
}
