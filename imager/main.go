// Command imager creates, inspects and converts VMDK images. It is the
// workload of vmdkpop's Kubernetes Jobs and a qemu-img-like tool for people:
// flags follow qemu-img where the operation is the same.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// exitError carries a specific exit code (compare's 1 = "different").
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

type command struct {
	name, usage string
	run         func(args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"info", "info [--output=human|json] [--root DIR] [--unsafe-paths] IMAGE", runInfo},
	{"convert", "convert [-f vmdk|raw] -O raw|vmdk [-o subformat=...] [-c LEVEL] [-p] [-t writeback|unsafe] [--root DIR] [--unsafe-paths] SRC DST", runConvert},
	{"flatten", "flatten [-O vmdk|raw] [-o subformat=...] [-p] IMAGE OUT   (a chain into one self-contained image)", runFlatten},
	{"map", "map [--output=human|json] [--root DIR] [--unsafe-paths] IMAGE", runMap},
	{"create", "create [-o subformat=...,adapter_type=...,hwversion=...,toolsversion=...,zeroed_grain=on] [-b BACKING] IMAGE [SIZE]", runCreate},
	{"check", "check [--output=human|json] [-r] IMAGE   (exit 0 clean, 2 corruptions, 3 leaks only, 1 could not check)", runCheck},
	{"commit", "commit IMAGE   (into its backing file; the chain stays valid)", runCommit},
	{"rebase", "rebase [-u] -b NEWBACKING IMAGE   (content kept unless -u)", runRebase},
	{"import", "import --target DIR|DEVICE [--target-format raw|vmdk] [-o subformat=...] [--checksum sha256:HEX] [--ova-disk N|NAME] [--scratch-dir DIR] [--result-file F] [http flags] SOURCE   (SOURCE: path, http(s) URL or -; exit 0 ok, 1 transient, 2 usage, 3 permanent, 143 terminated)", runImport},
	{"write", "write [-P BYTE | --random SEED] [--root DIR] OFFSET LENGTH IMAGE   (a pattern into a VMDK, like qemu-io write -P)", runWrite},
	{"checksum", "checksum [-f vmdk|raw] [--size N] [--result-file F] IMAGE   (sha256 of the guest-visible content)", runChecksum},
	{"compare", "compare [-f FMT] [-F FMT] [-s] [-p] A B   (exit 0 identical, 1 different, 2 error)", runCompare},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imager COMMAND [flags] ARGS")
	for _, c := range commands {
		fmt.Fprintf(w, "  imager %s\n", c.usage)
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and maps its error to an exit code and one line
// on stderr. A panic is reported the same way: no stack trace reaches users.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "imager: internal error: %v\n", r)
			code = 70
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		if err == nil {
			return 0
		}
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(stderr, ee.msg)
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "imager %s: %v\n", c.name, err)
		if c.name == "compare" {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "imager: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
