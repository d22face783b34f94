package main

import (
	"flag"
	"fmt"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// resultFlag registers --result-file on the commands Jobs run (create,
// convert, flatten, info; import has its own default). Commands that take
// it are marked results in the command table.
func resultFlag(fs *flag.FlagSet) *string {
	return fs.String("result-file", "", "write the result JSON (imager/jobapi) here, e.g. "+jobapi.ResultPath)
}

// settle fills r's phase, reason and message from a command's outcome and
// returns the exit code: classify and exitCode decide both.
func settle(r *jobapi.Result, err error, success string) int {
	if err == nil {
		r.Phase, r.Reason, r.Message = jobapi.Succeeded, jobapi.ReasonSucceeded, success
		return jobapi.ExitOK
	}
	reason, perm := classify(err)
	r.Phase, r.Reason, r.Message, r.Permanent = jobapi.Failed, reason, err.Error(), perm
	return exitCode(err)
}

// describeVMDK records what the VMDK at path holds.
func describeVMDK(r *jobapi.Result, path string, pf *pathFlags) error {
	return target.DescribeVMDK(r, path, pf.options())
}

// withResult ends a command that wrote the VMDK at out: with a result
// file, the outcome goes there. Without one err is returned as it is; run
// maps it to the same exit code either way.
func withResult(cmd, resultPath, out string, pf *pathFlags, err error) error {
	if resultPath == "" {
		return err
	}
	var r jobapi.Result
	if err == nil {
		err = describeVMDK(&r, out, pf)
	}
	code := settle(&r, err, "wrote "+out)
	if werr := jobapi.Write(resultPath, &r); werr != nil && err == nil {
		return fmt.Errorf("result file: %w", werr)
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code, msg: fmt.Sprintf("imager %s: %v", cmd, err)}
}
