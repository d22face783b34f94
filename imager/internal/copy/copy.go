// Package copy is imager's copy engine: a source's guest content into a
// target, chunk by chunk, following the source's block status so that
// what the source maps as zero is never read, and zero runs inside data
// become holes. Unordered copies run several workers at once (inflating,
// reading and writing overlap); a stream target gets its data in order.
package copy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// ChunkSize is the bytes read per step: 64 grains to inflate in parallel.
const ChunkSize = 4 << 20

// zeroChunkSize is the most one zero chunk covers: zero ranges cost no
// reads, so a large unit keeps an empty multi-TiB disk to a few thousand
// steps, while a device's zeroing (Zero) still checks for cancellation
// about every second.
const zeroChunkSize = 1 << 30

// Source is what is copied: a VMDK disk or a raw file.
type Source interface {
	io.ReaderAt
	Size() int64
	// BlockStatus returns the mapping of a prefix of [off, off+n).
	BlockStatus(off, n int64) (vmdk.Mapping, error)
}

// chunk is a range of the source to copy: data to read, or a zero range.
type chunk struct {
	off, n int64
	zero   bool // nothing stored: write zeros only to a block device
}

// Image copies src's guest content to dst. Ranges the source maps as
// zero are skipped (or zeroed on a block device); data is read in chunks
// by several workers at once, so inflating, reading and writing overlap,
// and zero runs inside data become holes.
func Image(ctx context.Context, src Source, dst target.Target, report func(int64)) error {
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
			buf := make([]byte, ChunkSize)
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

// walkChunks sends src's content as chunks, following its block status.
func walkChunks(ctx context.Context, src Source, out chan<- chunk) error {
	return Ranges(ctx, src, src.Size(), func(off, n int64, zero bool) error {
		select {
		case out <- chunk{off: off, n: n, zero: zero}:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
}

// Ranges calls fn for [0, size) of src in order, as src's block status
// splits it: data ranges of at most ChunkSize bytes, and zero ranges
// (nothing stored, nothing to read) of at most zeroChunkSize, so that the
// steps are in proportion to what the source allocates, not to its size.
func Ranges(ctx context.Context, src Source, size int64, fn func(off, n int64, zero bool) error) error {
	for off := int64(0); off < size; {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		m, err := src.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		if m.NoAccess {
			return fmt.Errorf("byte %d: %w", off, vmdk.ErrNoAccess)
		}
		zero := !m.Data || m.Zero // nothing stored, or a hole of a flat extent's file
		step := int64(ChunkSize)
		if zero {
			step = zeroChunkSize
		}
		for end := off + m.Length; off < end; {
			n := min(step, end-off)
			if err := fn(off, n, zero); err != nil {
				return err
			}
			off += n
		}
	}
	return nil
}

var zeros = make([]byte, ChunkSize)

// safeCopyChunk is copyChunk with a panic turned into an error: the
// workers run where main's recover cannot see.
func safeCopyChunk(src Source, dst target.Target, c chunk, buf []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return copyChunk(src, dst, c, buf)
}

func copyChunk(src Source, dst target.Target, c chunk, buf []byte) error {
	if c.zero {
		return dst.Zero(c.off, c.n) // a hole where the destination was created empty
	}
	buf = buf[:c.n]
	if _, err := src.ReadAt(buf, c.off); err != nil && err != io.EOF {
		return err
	}
	return WriteSparse(dst, buf, c.off)
}

// WriteSparse writes buf at off as alternating runs: data runs are
// written, runs of aligned all-zero blocks of dst.HoleUnit bytes are left
// as holes (dst.Zero).
func WriteSparse(dst target.Target, buf []byte, off int64) error {
	unit := dst.HoleUnit()
	flush := func(from, to int, zero bool) error {
		if from == to {
			return nil
		}
		if !zero {
			_, err := dst.WriteAt(buf[from:to], off+int64(from))
			return err
		}
		return dst.Zero(off+int64(from), int64(to-from))
	}
	start, zeroRun := 0, false
	for i := 0; i < len(buf); {
		end := min(int((off+int64(i))/int64(unit)+1)*unit-int(off), len(buf)) // next unit boundary
		z := bytes.Equal(buf[i:end], zeros[:end-i])
		if i > start && z != zeroRun {
			if err := flush(start, i, zeroRun); err != nil {
				return err
			}
			start = i
		}
		zeroRun = z
		i = end
	}
	return flush(start, len(buf), zeroRun)
}

// InOrder copies src's data chunks to dst in ascending order (a stream
// cannot seek back); zero ranges are skipped.
func InOrder(ctx context.Context, src Source, dst target.Target, report func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	chunks := make(chan chunk, 2)
	walkErr := make(chan error, 1)
	go func() {
		walkErr <- walkChunks(ctx, src, chunks)
		close(chunks)
	}()
	buf := make([]byte, ChunkSize)
	var done int64
	for c := range chunks {
		if !c.zero {
			b := buf[:c.n]
			_, err := src.ReadAt(b, c.off)
			if err == nil || err == io.EOF {
				_, err = dst.WriteAt(b, c.off)
			}
			if err != nil {
				cancel(err)
				for range chunks {
				}
				return err
			}
		}
		done += c.n
		if report != nil {
			report(done)
		}
	}
	if err := <-walkErr; err != nil {
		return err
	}
	if report != nil {
		report(-1)
	}
	return nil
}
