package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// parseArgs parses flags that may come before or after the positional
// arguments (qemu-img accepts both) and checks the positional count. Every
// error it returns is a usageError.
func parseArgs(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	return parseArgsRange(fs, args, want, want)
}

func parseArgsRange(fs *flag.FlagSet, args []string, least, most int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError(fs, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < least || len(pos) > most {
		want := fmt.Sprint(least)
		if most > least {
			want = fmt.Sprintf("%d to %d", least, most)
		}
		return nil, usagef("want %s argument(s), got %d", want, len(pos))
	}
	return pos, nil
}

// flagError makes an error of the flag package a usage error. A negative
// number where an argument belongs ("-5G" as a size) reaches the flag
// package as an unknown flag: the message says what it is instead.
func flagError(fs *flag.FlagSet, err error) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && name != "" && strings.ContainsAny(name[:1], "0123456789.") {
		return usagef("-%s: a negative number (sizes and offsets must be positive)", name)
	}
	return &usageError{err: err, flags: fs}
}

// resultFileArg finds the last --result-file in args without the flag
// package: a usage error is reported there too, also when parsing stopped
// before the flag was reached.
func resultFileArg(args []string) string {
	path := ""
	for i, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		switch {
		case name != "result-file":
		case hasVal:
			path = val
		case i+1 < len(args):
			path = args[i+1]
		}
	}
	return path
}

// maxSize bounds every size argument: no disk is larger than a VMDK can be
// (2^40 sectors, 512 TiB).
const maxSize = 1 << 49

// parseSize reads a size from the command line as qemu-img does: bytes, or
// a number with a binary suffix k, M, G, T, P (case-insensitive, optional
// "B"/"iB"). Its errors are usage errors.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	shift := 0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGTP", t[n-1]); i >= 0 {
			shift, t = 10*(i+1), t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	bytes := v * float64(int64(1)<<shift)
	if err != nil || !(bytes >= 1 && bytes <= maxSize) { // NaN fails both
		return 0, usagef("size %q: want a positive number of bytes, or of k, M, G, T or P, at most 512T", s)
	}
	return int64(bytes), nil
}
