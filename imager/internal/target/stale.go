package target

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A target file is built under a temporary name beside its final one. An
// attempt killed (SIGKILL, the node lost) leaves that temporary behind,
// holding space the next attempt's fits-check would then miss: on a tight
// volume every retry would fail TargetTooSmall. So each attempt removes
// the temporaries of earlier ones before it checks the space.
//
// Only names imager makes are touched: "." + the final name + ".imager-"
// + CreateTemp's decimal digits + ".partial" (a raw file) or ".tmp" (a
// VMDK's directory). And only dead attempts' ones: each attempt holds an
// flock on its temporary until it is done with it, so a temporary whose
// lock can be taken belongs to no running imager.

const (
	tempInfix      = ".imager-"
	tempFileSuffix = ".partial"
	tempDirSuffix  = ".tmp"
)

// tempPattern is the os.CreateTemp / os.MkdirTemp pattern of a temporary
// for the final path.
func tempPattern(path, suffix string) string {
	return "." + filepath.Base(path) + tempInfix + "*" + suffix
}

// isTemp: name is a temporary imager made for the final path.
func isTemp(path, name string) bool {
	for _, suffix := range []string{tempFileSuffix, tempDirSuffix} {
		mid, ok := strings.CutPrefix(name, "."+filepath.Base(path)+tempInfix)
		if !ok {
			continue
		}
		digits, ok := strings.CutSuffix(mid, suffix)
		if ok && digits != "" && strings.Trim(digits, "0123456789") == "" {
			return true
		}
	}
	return false
}

// lockTemp takes the flock that says f's attempt is alive; it is held
// until f is closed.
func lockTemp(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeStale removes the temporaries earlier attempts at path left behind
// and no running attempt holds. What cannot be removed is left: the
// fits-check that follows says what space is missing.
func removeStale(path string) {
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !isTemp(path, e.Name()) || !e.Type().IsRegular() && !e.IsDir() {
			continue // not imager's: it makes no links, FIFOs or devices
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		// Held while removing; a live attempt's own lock makes this fail
		// (EWOULDBLOCK), as does a filesystem without flock: left alone.
		if err := lockTemp(f); err != nil {
			f.Close()
			continue
		}
		if e.IsDir() {
			os.RemoveAll(p)
		} else {
			os.Remove(p)
		}
		f.Close()
	}
}
