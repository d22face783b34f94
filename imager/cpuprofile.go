package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of the whole command to the file
// IMAGER_CPUPROFILE names, when it is set: a developer's hook for finding
// where a conversion's or an import's time goes (go tool pprof -top
// imager FILE). Off by default; a profile that cannot start is reported
// and the command runs without it. The returned func stops it.
func startCPUProfile() func() {
	path := os.Getenv("IMAGER_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imager: IMAGER_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
