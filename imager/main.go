// Command imager creates, inspects and converts VMDK images. It is the
// workload of vmdkpop's Kubernetes Jobs and a qemu-img-like tool for people:
// flags follow qemu-img where the operation is the same.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// exitError carries a specific exit code (compare's 1 = "different") and
// the line to print, when the command has settled its outcome itself.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	// results: the command takes --result-file, where a usage error is
	// reported too; import's defaults to jobapi.ResultPath when it exists.
	results bool
	// codes replaces the exit-code table for commands whose codes say
	// what they found (check, compare); nil: exitCode.
	codes *exitCodes
}

// exitCodes of a command with its own meanings: usage for a usage error,
// failure for anything else that stopped it.
type exitCodes struct{ usage, failure int }

var commands = []command{
	{name: "info", usage: "info [--output=human|json] [--backing-chain] [--result-file F] [--root DIR] [--unsafe-paths] [http flags] IMAGE|URL", run: runInfo, results: true},
	{name: "convert", usage: "convert [-f vmdk|raw] -O raw|vmdk [-o subformat=...] [-c LEVEL] [-p] [-t writeback|unsafe] [--result-file F] [--root DIR] [--unsafe-paths] [http flags] SRC|URL DST", run: runConvert, results: true},
	{name: "flatten", usage: "flatten [-O vmdk|raw] [-o subformat=...] [-p] [--result-file F] IMAGE OUT   (a chain into one self-contained image)", run: runFlatten, results: true},
	{name: "map", usage: "map [--output=human|json] [--root DIR] [--unsafe-paths] IMAGE", run: runMap},
	{name: "create", usage: "create [-o subformat=...,adapter_type=...,hwversion=...,toolsversion=...,zeroed_grain=on] [-b BACKING] [-q] [--result-file F] IMAGE [SIZE]", run: runCreate, results: true},
	{name: "check", usage: "check [--output=human|json] [-r] IMAGE   (exit 0 clean, 2 corruptions, 3 leaks only, 1 could not check, 64 bad command line)", run: runCheck,
		codes: &exitCodes{usage: checkUsage, failure: checkFailed}},
	{name: "commit", usage: "commit [-q] IMAGE   (into its backing file; the chain stays valid)", run: runCommit},
	{name: "rebase", usage: "rebase [-u] -b NEWBACKING IMAGE   (content kept unless -u)", run: runRebase},
	{name: "import", usage: "import --target DIR|DEVICE [--target-format raw|vmdk] [-o subformat=...] [--checksum sha256:HEX] [--ova-disk N|NAME|all] [--max-size SIZE] [--min-throughput BYTES/S] [--deadline DURATION] [--scratch-dir DIR] [--result-file F] [http flags] SOURCE   (SOURCE: path, http(s) URL or -; or --vsphere-* flags, with --vsphere-delta-from S1 -b BASE.vmdk for a delta)", run: runImport, results: true},
	{name: "apply-delta", usage: "apply-delta --target FILE|DEVICE [--expect-parent-cid CID] [-t writeback|unsafe] [--result-file F] [--root DIR] [--unsafe-paths] DELTA.vmdk   (a delta's own grains into a raw disk holding its parent)", run: runApplyDelta, results: true},
	{name: "write", usage: "write [-P BYTE | --random SEED] [--result-file F] [--root DIR] OFFSET LENGTH IMAGE   (a pattern into a VMDK, like qemu-io write -P)", run: runWrite, results: true},
	{name: "checksum", usage: "checksum [-f vmdk|raw] [--size N] [--result-file F] IMAGE   (sha256 of the guest-visible content)", run: runChecksum, results: true},
	{name: "compare", usage: "compare [-f FMT] [-F FMT] [-s] [-p] A B   (exit 0 identical, 1 different, 2 error or bad command line)", run: runCompare,
		codes: &exitCodes{usage: 2, failure: 2}},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imager COMMAND [flags] ARGS")
	for _, c := range commands {
		fmt.Fprintf(w, "  imager %s\n", c.usage)
	}
	fmt.Fprintln(w, "exit codes (but check, compare): 0 done, 1 transient failure (a retry may work), 2 bad command line, 3 permanent failure, 143 SIGTERM/SIGINT")
}

// terminationGrace is how long main waits, after SIGTERM or SIGINT, for the
// command to stop on its own: longer than import's wait for its copy
// (stopGrace), so an import still writes its result; Kubernetes' default
// grace period is 30 s.
const terminationGrace = 15 * time.Second

// main runs one command under the process's one root context, cancelled by
// SIGTERM (a Job's pod being deleted) or SIGINT. Every command stops on
// it; one that does not within terminationGrace exits 143 anyway.
func main() { os.Exit(mainCode()) }

// memoryLimit is the Go runtime's soft limit on its memory. Issue 16
// bounds an imager's peak RSS at 64 MiB on any path, and without a limit
// the collector lets garbage grow as large as what is live before it
// runs: an HTTP chain import, whose live heap is its block cache (about
// 40 MiB counted by the runtime, 8 MiB of which are zero buffers never
// touched), peaked at 90-113 MiB on a 1 GiB chain. Under this limit it
// peaks at 56-61 MiB; 52 MiB left too little room above what is live and
// doubled its CPU time in the collector. The text of the binary (about 10
// MiB resident) is outside the limit, as is memory the runtime has not
// yet returned.
const memoryLimit = 56 << 20

// setMemoryLimit sets memoryLimit, unless GOMEMLIMIT asks for another.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// mainCode runs the command of os.Args under a context that SIGTERM and
// SIGINT end, and returns its exit code.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	defer startCPUProfile()()
	setMemoryLimit()
	done := make(chan int, 1)
	go func() { done <- run(ctx, os.Args[1:], os.Stdout, os.Stderr) }()
	select {
	case code := <-done:
		return code
	case <-ctx.Done():
		select {
		case code := <-done:
			return code
		case <-time.After(terminationGrace):
			fmt.Fprintln(os.Stderr, "imager: terminated by a signal")
			return jobapi.ExitTerminated
		}
	}
}

// run executes one command and maps its error to an exit code and one line
// on stderr. A panic is reported the same way: no stack trace reaches users.
// Whatever reaches stderr has the secrets of its URLs redacted. ctx ends
// the command early (a signal): it exits 143.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	stderr = redactingWriter{stderr}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "imager: internal error: %v\n", r)
			code = 70
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return jobapi.ExitUsage
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.exit(c.run(ctx, args[1:], stdout, stderr), args[1:], stderr)
		}
	}
	fmt.Fprintf(stderr, "imager: unknown command %q\n", args[0])
	usage(stderr)
	return jobapi.ExitUsage
}

// exit reports err, how the command given args ended, and returns its exit
// code: the one mapping from outcomes to exit codes.
func (c *command) exit(err error, args []string, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "usage: imager %s\n", c.usage)
			if ue.flags != nil {
				ue.flags.SetOutput(stderr)
				ue.flags.PrintDefaults()
			}
			return 0
		}
		if c.results {
			c.usageResult(args, err)
		}
		fmt.Fprintf(stderr, "imager %s: %v (see imager %s -h)\n", c.name, err, c.name)
		if c.codes != nil {
			return c.codes.usage
		}
		return jobapi.ExitUsage
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "imager %s: %v\n", c.name, err)
	if c.codes != nil && !terminated(err) { // 143 says the same for every command
		return c.codes.failure
	}
	return exitCode(err)
}

// usageResult writes a usage error to the command's result file, found in
// args by hand: the flag parse may have stopped before --result-file. A
// result file that cannot be written changes nothing: the exit code
// already says the command line is wrong.
func (c *command) usageResult(args []string, err error) {
	path := resultFileArg(args)
	if path == "" && c.name == "import" {
		if _, serr := os.Stat(jobapi.ResultPath); serr == nil {
			path = jobapi.ResultPath
		}
	}
	if path == "" {
		return
	}
	var r jobapi.Result
	settle(&r, err, "")
	jobapi.Write(path, &r)
}

// redactingWriter redacts the URLs of each write (imager writes whole
// lines at once) before passing it on.
type redactingWriter struct{ w io.Writer }

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, jobapi.RedactURL(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
