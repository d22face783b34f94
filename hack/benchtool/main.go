// Command benchtool is the Go half of the benchmark scripts (hack/bench-*.sh):
//
//	benchtool gen -size N [-content C] -seed S -o src.raw
//	    the deterministic mixed-content disk every row converts
//	benchtool floor -src src.raw [-levels 6,6] [-mib 128]
//	    zlib deflate and inflate throughput on src.raw's own 64 KiB grains,
//	    at 1 and 2 goroutines: the compression floor of the stream rows
//	benchtool table [-strict] SAMPLES...
//	    the one table of medians, ratios and verdicts from the scripts'
//	    recorded runs
//	benchtool corrupt -- CMD ARGS...
//	    runs CMD, then flips one byte of its output: the scripts' self-test,
//	    proving that their verification fails loudly
//
// It is a program of its own (not a heredoc in a script) so that it is
// built, vetted and tested with the module.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool gen|floor|table|corrupt ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "gen":
		err = genMain(args)
	case "floor":
		err = floorMain(args, os.Stdout)
	case "table":
		err = tableMain(args, os.Stdout)
	case "corrupt":
		err = corruptMain(args)
	default:
		err = fmt.Errorf("unknown command %q (gen, floor, table, corrupt)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		if err == errUnmet {
			os.Exit(3)
		}
		os.Exit(1)
	}
}
