package main

import (
	"bytes"
	stdzlib "compress/zlib"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zlib"
)

// grainSize is a VMDK grain (128 sectors): the unit both tools compress.
const grainSize = 64 << 10

// codec is one zlib implementation: a compressor and a decompressor, each
// made once per goroutine and reset per grain, as a converter would.
type codec struct {
	name    string
	deflate func(level int) (func(dst *bytes.Buffer, src []byte) error, error)
	inflate func() func(dst []byte, src []byte) error
}

var codecs = []codec{
	{
		name: "klauspost/compress/zlib",
		deflate: func(level int) (func(*bytes.Buffer, []byte) error, error) {
			w, err := zlib.NewWriterLevel(io.Discard, level)
			return deflater(w), err
		},
		inflate: inflater(zlib.NewReader),
	},
	{
		name: "compress/zlib (Go)",
		deflate: func(level int) (func(*bytes.Buffer, []byte) error, error) {
			w, err := stdzlib.NewWriterLevel(io.Discard, level)
			return deflater(w), err
		},
		inflate: inflater(stdzlib.NewReader),
	},
}

// deflater compresses each grain with w, reset onto dst.
func deflater(w interface {
	io.WriteCloser
	Reset(io.Writer)
}) func(*bytes.Buffer, []byte) error {
	return func(dst *bytes.Buffer, src []byte) error {
		w.Reset(dst)
		if _, err := w.Write(src); err != nil {
			return err
		}
		return w.Close()
	}
}

// inflater inflates each grain with one reader from newReader, reset
// onto each grain's bytes (both packages' readers have the same Reset).
func inflater(newReader func(io.Reader) (io.ReadCloser, error)) func() func([]byte, []byte) error {
	return func() func([]byte, []byte) error {
		var r io.ReadCloser
		return func(dst, src []byte) error {
			var err error
			if r == nil {
				r, err = newReader(bytes.NewReader(src))
			} else {
				err = r.(interface {
					Reset(io.Reader, []byte) error
				}).Reset(bytes.NewReader(src), nil)
			}
			if err == nil {
				_, err = io.ReadFull(r, dst)
			}
			return err
		}
	}
}

// sampleGrains reads the non-zero grains of the raw file at path, every
// stride-th of them so that at most maxBytes are kept (the mix of the
// whole disk, evenly sampled), and the disk's count of non-zero bytes.
func sampleGrains(path string, maxBytes int64) (sample [][]byte, dataBytes int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	buf := make([]byte, grainSize)
	var offs []int64
	for off := int64(0); ; off += grainSize {
		n, err := io.ReadFull(f, buf)
		if n > 0 && !allZero(buf[:n]) {
			offs = append(offs, off)
			dataBytes += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if len(offs) == 0 {
		return nil, 0, fmt.Errorf("%s holds no data", path)
	}
	keep := max(1, int(maxBytes/grainSize))
	stride := (len(offs) + keep - 1) / keep
	for i := 0; i < len(offs); i += stride {
		g := make([]byte, grainSize)
		n, err := f.ReadAt(g, offs[i])
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("reading %s at %d: %w", path, offs[i], err)
		}
		sample = append(sample, g[:n])
	}
	return sample, dataBytes, nil
}

// zeros is what allZero compares with: bytes.Equal is assembly, many times
// a byte loop's speed (and not slowed by the race detector's
// instrumentation).
var zeros [grainSize]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// parallel runs work(i) for every i < n on g goroutines, each with its own
// state from newWorker, and returns the wall time and the first error.
func parallel(n, g int, newWorker func() (func(i int) error, error)) (time.Duration, error) {
	workers := make([]func(int) error, g)
	for k := range workers {
		w, err := newWorker()
		if err != nil {
			return 0, err
		}
		workers[k] = w
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, g)
	t0 := time.Now()
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := workers[k](i); err != nil {
					errs[k] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

func floorMain(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	src := fs.String("src", "src.raw", "raw disk whose grains are compressed")
	levelsFlag := fs.String("levels", "6", "comma-separated zlib levels to deflate at (qemu-img uses zlib's default, 6)")
	mib := fs.Int64("mib", 64, "MiB of grains sampled (evenly over the disk's non-zero grains)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lv []int
	for _, s := range strings.Split(*levelsFlag, ",") {
		l, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || l < 1 || l > 9 {
			return fmt.Errorf("floor: -levels %q: want levels 1-9", *levelsFlag)
		}
		if !containsInt(lv, l) {
			lv = append(lv, l)
		}
	}
	sample, dataBytes, err := sampleGrains(*src, *mib<<20)
	if err != nil {
		return err
	}
	var sampleBytes int64
	for _, g := range sample {
		sampleBytes += int64(len(g))
	}
	fmt.Fprintf(w, "floor\tzlib sample\t%d MiB of %s's %d MiB of non-zero 64 KiB grains; rates are of uncompressed bytes; s for all is the time at that rate for all %d MiB\n",
		sampleBytes>>20, *src, dataBytes>>20, dataBytes>>20)
	report := func(what string, g int, d time.Duration, extra string) {
		rate := float64(sampleBytes) / d.Seconds()
		fmt.Fprintf(w, "floor\t%s, %d goroutine%s\t%.0f MiB/s, %.2f s for all%s\n", what, g, plural(g), rate/(1<<20), float64(dataBytes)/rate, extra)
	}
	for _, c := range codecs {
		for _, level := range lv {
			// One compressed copy of the sample, for the size ratio and
			// as the input of the inflate runs.
			compressed := make([][]byte, len(sample))
			for g := 1; g <= 2; g++ {
				d, err := parallel(len(sample), g, func() (func(int) error, error) {
					def, err := c.deflate(level)
					if err != nil {
						return nil, err
					}
					var out bytes.Buffer
					return func(i int) error {
						out.Reset()
						if err := def(&out, sample[i]); err != nil {
							return err
						}
						if compressed[i] == nil {
							compressed[i] = bytes.Clone(out.Bytes())
						}
						return nil
					}, nil
				})
				if err != nil {
					return fmt.Errorf("%s deflate level %d: %w", c.name, level, err)
				}
				var csize int64
				for _, b := range compressed {
					csize += int64(len(b))
				}
				report(fmt.Sprintf("%s deflate -%d", c.name, level), g, d, fmt.Sprintf(", compressed to %.3f of its size", float64(csize)/float64(sampleBytes)))
			}
			if level != lv[0] {
				continue // inflate speed hardly depends on the level
			}
			for g := 1; g <= 2; g++ {
				d, err := parallel(len(compressed), g, func() (func(int) error, error) {
					inf := c.inflate()
					out := make([]byte, grainSize)
					return func(i int) error {
						out := out[:len(sample[i])]
						if err := inf(out, compressed[i]); err != nil {
							return err
						}
						if !bytes.Equal(out, sample[i]) {
							return fmt.Errorf("grain %d inflates to other bytes", i)
						}
						return nil
					}, nil
				})
				if err != nil {
					return fmt.Errorf("%s inflate: %w", c.name, err)
				}
				report(c.name+" inflate (with a compare)", g, d, "")
			}
		}
	}
	return nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
