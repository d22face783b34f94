package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// corruptMain runs a command, then flips one byte of what it wrote: the
// scripts' self-test (BENCH_SELFTEST=1) stands it in for imager, and a
// run that does not then fail its verification is a benchmark that
// would report wrong bytes as a result.
func corruptMain(args []string) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		return fmt.Errorf("corrupt: usage: benchtool corrupt -- CMD ARGS...")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("corrupt: %s: %w", args[0], err)
	}
	out := outputOf(args[1:])
	off, err := flipByte(out)
	if err != nil {
		return fmt.Errorf("corrupt %s: %w", out, err)
	}
	fmt.Fprintf(os.Stderr, "benchtool corrupt: flipped the byte at %d of %s\n", off, out)
	return nil
}

// outputOf names the file a convert (its last argument) or an import (the
// disk.img, or --target-name, in --target DIR) writes.
func outputOf(args []string) string {
	target, name := "", "disk.img"
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		val := ""
		if k, v, ok := strings.Cut(a, "="); ok {
			a, val = k, v
		} else if i+1 < len(args) {
			val = args[i+1]
		}
		switch {
		case a == "target" && strings.HasPrefix(args[i], "-"):
			target = val
		case a == "target-name" && strings.HasPrefix(args[i], "-"):
			name = val
		}
	}
	if target != "" {
		return filepath.Join(target, name)
	}
	return args[len(args)-1]
}

// flipByte inverts the first non-zero byte at or after the middle of the
// file (data, not a hole or a header), or the middle byte of a file with
// no data there.
func flipByte(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() == 0 {
		return 0, errors.New("empty file")
	}
	mid := st.Size() / 2
	off := mid
	buf := make([]byte, 1<<20)
	for pos := mid; pos < st.Size(); {
		n, err := f.ReadAt(buf, pos)
		if i := firstNonZero(buf[:n]); i >= 0 {
			off = pos + int64(i)
			break
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		pos += int64(n)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		return 0, err
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		return 0, err
	}
	return off, f.Close()
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}
