package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

const (
	copyChunk  = 4 << 20 // bytes read per step: 64 grains to inflate in parallel
	sparseUnit = 4 << 10 // zero runs of this size become holes (qemu-img's -S 4k)
	copyDepth  = 4       // chunks in flight between reader and writer
)

func runConvert(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	srcFormat := fs.String("f", "", "source format: vmdk or raw (default: probe)")
	dstFormat := fs.String("O", "raw", "output format (raw)")
	progress := fs.Bool("p", false, "show progress on stderr")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if *dstFormat != "raw" {
		return fmt.Errorf("output format %q is not supported yet (want raw)", *dstFormat)
	}
	src, err := openImage(pos[0], *srcFormat, &pf)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, block, err := openRawTarget(pos[1], src.Size())
	if err != nil {
		return err
	}
	var report func(done int64)
	if *progress {
		report = progressPrinter(os.Stderr, src.Size())
	}
	err = copyImage(background, src, dst, block, report)
	if err == nil && !block {
		err = dst.Truncate(src.Size())
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", pos[1], err)
	}
	return nil
}

// openRawTarget opens a raw destination: a regular file is created or
// truncated to empty (so untouched ranges are holes); a block device must
// be at least size bytes.
func openRawTarget(path string, size int64) (f *os.File, block bool, err error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, false, err
		}
		devSize, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, false, err
		}
		if devSize < size {
			f.Close()
			return nil, false, fmt.Errorf("%s: device has %d bytes, the image needs %d", path, devSize, size)
		}
		return f, true, nil
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	return f, false, err
}

type chunk struct {
	off  int64
	buf  []byte
	zero bool // nothing stored: write zeros only to a block device
	n    int64
}

// copyImage copies src's guest content to dst: ranges the source maps as
// zero are skipped (or zero-filled on a block device), data is read in
// chunks while the previous chunks are written, and zero runs inside data
// become holes.
func copyImage(ctx context.Context, src image, dst io.WriterAt, block bool, report func(int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool := sync.Pool{New: func() any { return make([]byte, copyChunk) }}
	chunks := make(chan chunk, copyDepth)
	readErr := make(chan error, 1)
	go func() {
		defer close(chunks)
		readErr <- readChunks(ctx, src, &pool, chunks)
	}()
	var done int64
	var zeros []byte
	for c := range chunks {
		var err error
		switch {
		case c.zero && block:
			if zeros == nil {
				zeros = make([]byte, copyChunk)
			}
			for o := int64(0); o < c.n && err == nil; o += copyChunk {
				_, err = dst.WriteAt(zeros[:min(copyChunk, c.n-o)], c.off+o)
			}
		case !c.zero:
			err = writeSparse(dst, c.buf, c.off, block)
			pool.Put(c.buf[:cap(c.buf)])
		}
		if err != nil {
			cancel()
			for range chunks {
			}
			return err
		}
		done += c.n
		if report != nil {
			report(done)
		}
	}
	if report != nil {
		report(-1)
	}
	return <-readErr
}

func readChunks(ctx context.Context, src image, pool *sync.Pool, out chan<- chunk) error {
	size := src.Size()
	for off := int64(0); off < size; {
		m, err := src.status(off, size-off)
		if err != nil {
			return err
		}
		if !m.Data {
			if m.NoAccess {
				return fmt.Errorf("byte %d is in a NOACCESS extent", off)
			}
			select {
			case out <- chunk{off: off, zero: true, n: m.Length}:
			case <-ctx.Done():
				return ctx.Err()
			}
			off += m.Length
			continue
		}
		for end := off + m.Length; off < end; {
			n := min(copyChunk, end-off)
			buf := pool.Get().([]byte)[:n]
			if _, err := src.ReadAt(buf, off); err != nil && err != io.EOF {
				return err
			}
			select {
			case out <- chunk{off: off, buf: buf, n: n}:
			case <-ctx.Done():
				return ctx.Err()
			}
			off += n
		}
	}
	return nil
}

var zeroUnit = make([]byte, sparseUnit)

// writeSparse writes buf at off, skipping sparseUnit-aligned zero blocks
// (a block device gets every byte).
func writeSparse(dst io.WriterAt, buf []byte, off int64, block bool) error {
	if block {
		_, err := dst.WriteAt(buf, off)
		return err
	}
	start := -1 // start of the pending non-zero run
	for i := 0; i < len(buf); i += sparseUnit {
		end := min(i+sparseUnit, len(buf))
		if bytes.Equal(buf[i:end], zeroUnit[:end-i]) {
			if start >= 0 {
				if _, err := dst.WriteAt(buf[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		_, err := dst.WriteAt(buf[start:], off+int64(start))
		return err
	}
	return nil
}

// progressPrinter returns a reporter that redraws "(xx.xx/100%)" on w at
// most every 100 ms; done < 0 finishes the line.
func progressPrinter(w io.Writer, total int64) func(int64) {
	var last time.Time
	return func(done int64) {
		if done < 0 {
			fmt.Fprintf(w, "    (100.00/100%%)\n")
			return
		}
		if time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(w, "    (%.2f/100%%)\r", pct)
	}
}
