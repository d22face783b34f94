package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNoScratch: a source that needs random access cannot be spooled (no
// scratch directory given, or one imager cannot write).
var ErrNoScratch = errors.New("source: no usable scratch space")

// ErrTooBig: a spooled source is longer than the disk it is for can be.
var ErrTooBig = errors.New("source: larger than the target takes")

// Spool copies the rest of r into a new file in dir, for a source that is
// read in order but needed at random offsets (a VMDK that is not
// streamOptimized, from a server without Range support or through a
// decompressor). The file's path is returned also on failure, for the
// caller to remove. A source longer than limit bytes (limit >= 0) fails
// with ErrTooBig as it passes it: an endless one does not fill the
// scratch space.
func Spool(ctx context.Context, dir string, r io.Reader, limit int64) (string, error) {
	f, err := os.CreateTemp(dir, "spool-*.img")
	if err != nil {
		return "", tag(ErrNoScratch, fmt.Errorf("scratch: %w", err))
	}
	src := WithContext(ctx, r)
	if limit >= 0 {
		src = io.LimitReader(src, limit+1)
	}
	n, err := io.Copy(f, src)
	if err == nil && limit >= 0 && n > limit {
		err = tag(ErrTooBig, fmt.Errorf("the source passes %d bytes", limit))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return f.Name(), fmt.Errorf("spool: %w", err)
	}
	return f.Name(), nil
}

// WithContext is r stopped once ctx is done: reads then fail with its
// cause.
func WithContext(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
