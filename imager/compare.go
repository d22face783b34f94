package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
)

// runCompare compares the guest content of two images like qemu-img
// compare: exit 0 when identical, 1 when different, 2 on error. Unless -s
// is given, images of different sizes are identical when the larger one
// reads zeros past the smaller one's end.
func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fmtA := fs.String("f", "", "format of the first image (default: probe)")
	fmtB := fs.String("F", "", "format of the second image (default: probe)")
	strict := fs.Bool("s", false, "strict: images of different sizes differ")
	progress := fs.Bool("p", false, "show progress on stderr")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if err := checkFormat("-f", *fmtA); err != nil {
		return err
	}
	if err := checkFormat("-F", *fmtB); err != nil {
		return err
	}
	a, err := openImage(pos[0], *fmtA, &pf)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := openImage(pos[1], *fmtB, &pf)
	if err != nil {
		return err
	}
	defer b.Close()
	if *strict && a.Size() != b.Size() {
		return &exitError{code: 1, msg: "Strict mode: Image size mismatch!"}
	}
	var report func(int64)
	if *progress {
		report = imgcopy.Printer(stderr, max(a.Size(), b.Size()))
	}
	off, same, err := firstDifference(ctx, a, b, report)
	if err != nil {
		return err
	}
	if !same {
		fmt.Fprintf(stdout, "Content mismatch at offset %d!\n", off)
		return &exitError{code: 1}
	}
	fmt.Fprintln(stdout, "Images are identical.")
	return nil
}

// firstDifference returns the first byte offset where a and b differ; past
// the shorter image, the longer one is compared against zeros. Ranges both
// images map as zero are skipped without reading, so comparing two mostly
// empty disks costs what they allocate.
func firstDifference(ctx context.Context, a, b image, report func(int64)) (int64, bool, error) {
	size := max(a.Size(), b.Size())
	bufA, bufB := make([]byte, imgcopy.ChunkSize), make([]byte, imgcopy.ChunkSize)
	for off := int64(0); off < size; {
		if err := context.Cause(ctx); err != nil {
			return 0, false, err
		}
		n, zero, err := commonStatus(a, b, off, size-off)
		if err != nil {
			return 0, false, err
		}
		if !zero {
			n = min(n, imgcopy.ChunkSize)
			for _, x := range []struct {
				img image
				buf []byte
			}{{a, bufA[:n]}, {b, bufB[:n]}} {
				if err := readPadded(x.img, x.buf, off); err != nil {
					return 0, false, err
				}
			}
			if !bytes.Equal(bufA[:n], bufB[:n]) {
				for i := range n {
					if bufA[i] != bufB[i] {
						return off + i, false, nil
					}
				}
			}
		}
		off += n
		if report != nil {
			report(off)
		}
	}
	if report != nil {
		report(-1)
	}
	return 0, true, nil
}

// commonStatus returns how many bytes from off (at most n) keep one status
// in both images, and whether both read as zeros there without anything
// stored (past an image's end counts as zeros).
func commonStatus(a, b image, off, n int64) (int64, bool, error) {
	zero := true
	for _, img := range []image{a, b} {
		if off >= img.Size() {
			continue
		}
		m, err := img.BlockStatus(off, min(n, img.Size()-off))
		if err != nil {
			return 0, false, err
		}
		n = min(n, m.Length)
		zero = zero && (!m.Data || m.Zero) && !m.NoAccess // NOACCESS: let the read fail
	}
	return n, zero, nil
}

// readPadded reads buf at off, zero-filling what lies past the image's end.
func readPadded(img image, buf []byte, off int64) error {
	n := int(max(0, min(int64(len(buf)), img.Size()-off)))
	clear(buf[n:])
	if n == 0 {
		return nil
	}
	if _, err := img.ReadAt(buf[:n], off); err != nil && err != io.EOF {
		return err
	}
	return nil
}
