package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
)

const (
	chunkSize   = 4 << 20 // bytes read per step: 64 grains to inflate in parallel
	rawHoleUnit = 4 << 10 // zero runs of this size become holes in raw files (qemu-img's -S 4k)
)

func runConvert(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	srcFormat := fs.String("f", "", "source format: vmdk or raw (default: probe)")
	dstFormat := fs.String("O", "raw", "output format: raw or vmdk")
	var options optionList
	fs.Var(&options, "o", "vmdk output options, repeatable: subformat=streamOptimized,adapter_type=...,hwversion=...,toolsversion=...")
	level := fs.Int("c", 0, "zlib level 1-9 for compressed (streamOptimized) output (default 6)")
	progress := fs.Bool("p", false, "show progress on stderr")
	cache := fs.String("t", "writeback", "output cache mode: writeback (fsync when done) or unsafe (no fsync, like qemu-img convert's default)")
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if *cache != "writeback" && *cache != "unsafe" {
		return fmt.Errorf("cache mode %q: want writeback or unsafe", *cache)
	}
	var opts vmdkOptions
	switch *dstFormat {
	case "raw":
		if len(options) != 0 || *level != 0 {
			return fmt.Errorf("-o and -c apply to -O vmdk only")
		}
	case "vmdk":
		if opts, err = parseVMDKOptions(options); err != nil {
			return err
		}
	default:
		return fmt.Errorf("output format %q: want raw or vmdk", *dstFormat)
	}
	src, err := openImage(pos[0], *srcFormat, &pf)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := checkNotSource(src, pos[1]); err != nil {
		return err
	}
	var report func(done int64)
	if *progress {
		report = progressPrinter(os.Stderr, src.Size())
	}
	if *dstFormat == "vmdk" {
		err = convertToVMDK(src, pos[1], opts, *level, *cache == "writeback", report)
	} else {
		err = convertToRaw(src, pos[1], *cache == "writeback", report)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", pos[1], err)
	}
	return nil
}

// runFlatten is convert with VMDK output by default: the chain's content
// goes into one self-contained image, holes kept.
func runFlatten(args []string, stdout io.Writer) error {
	return runConvert(append([]string{"-O", "vmdk"}, args...), stdout)
}

func convertToRaw(src image, path string, sync bool, report func(int64)) error {
	dst, block, err := openRawTarget(path, src.Size())
	if err != nil {
		return err
	}
	target := copyTarget{dst: dst, block: block, holeUnit: rawHoleUnit}
	err = copyImage(background, src, target, report)
	if err == nil && !block {
		err = dst.Truncate(src.Size())
	}
	if err == nil && sync {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
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

// chunk is a range of the source to copy: data to read, or a zero range.
type chunk struct {
	off, n int64
	zero   bool // nothing stored: write zeros only to a block device
}

// copyImage copies src's guest content to dst. Ranges the source maps as
// zero are skipped (zero-filled on a block device); data is read in chunks
// by several workers at once, so inflating, reading and writing overlap,
// and zero runs inside data become holes.
// copyTarget is where copyImage writes: a file or device, or a VMDK.
type copyTarget struct {
	dst io.WriterAt
	// block: a device that must get every byte, zeros included.
	block bool
	// holeUnit: aligned all-zero blocks of this size are not written
	// (leaving holes, or unallocated grains when it is the grain size).
	holeUnit int
}

func copyImage(ctx context.Context, src image, dst copyTarget, report func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	chunks := make(chan chunk, workers)
	var (
		wg       sync.WaitGroup
		reportMu sync.Mutex
		done     int64
	)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, chunkSize)
			for c := range chunks {
				if ctx.Err() != nil {
					continue // drain after a failure
				}
				if err := safeCopyChunk(src, dst, c, buf); err != nil {
					cancel(err)
					continue
				}
				if report != nil {
					reportMu.Lock()
					done += c.n
					report(done)
					reportMu.Unlock()
				}
			}
		})
	}
	err := walkChunks(ctx, src, chunks)
	close(chunks)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	if report != nil {
		report(-1)
	}
	return nil
}

// walkChunks sends src's content as chunks of at most chunkSize bytes,
// following its block status.
func walkChunks(ctx context.Context, src image, out chan<- chunk) error {
	size := src.Size()
	for off := int64(0); off < size; {
		m, err := src.status(off, size-off)
		if err != nil {
			return err
		}
		if m.NoAccess {
			return fmt.Errorf("byte %d is in a NOACCESS extent", off)
		}
		for end := off + m.Length; off < end; {
			n := min(chunkSize, end-off)
			select {
			case out <- chunk{off: off, n: n, zero: !m.Data}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			off += n
		}
	}
	return nil
}

var zeroChunk = make([]byte, chunkSize)

// safeCopyChunk is copyChunk with a panic turned into an error: the
// workers run where main's recover cannot see.
func safeCopyChunk(src image, dst copyTarget, c chunk, buf []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return copyChunk(src, dst, c, buf)
}

func copyChunk(src image, dst copyTarget, c chunk, buf []byte) error {
	if c.zero {
		if !dst.block {
			return nil // the destination was created empty: a hole
		}
		_, err := dst.dst.WriteAt(zeroChunk[:c.n], c.off)
		return err
	}
	buf = buf[:c.n]
	if _, err := src.ReadAt(buf, c.off); err != nil && err != io.EOF {
		return err
	}
	return writeSparse(dst, buf, c.off)
}

// writeSparse writes buf at off, skipping aligned all-zero blocks of
// dst.holeUnit bytes (a block device gets every byte).
func writeSparse(dst copyTarget, buf []byte, off int64) error {
	if dst.block {
		_, err := dst.dst.WriteAt(buf, off)
		return err
	}
	unit := dst.holeUnit
	start := -1 // start of the pending non-zero run
	for i := 0; i < len(buf); {
		end := min(int((off+int64(i))/int64(unit)+1)*unit-int(off), len(buf)) // next unit boundary
		if bytes.Equal(buf[i:end], zeroChunk[:end-i]) {
			if start >= 0 {
				if _, err := dst.dst.WriteAt(buf[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = end
	}
	if start >= 0 {
		_, err := dst.dst.WriteAt(buf[start:], off+int64(start))
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
