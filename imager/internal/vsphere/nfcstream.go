package vsphere

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// What an export's body must be: a streamOptimized VMDK read to its end;
// and what its stopping short means.

// checkStream: the export starts like a streamOptimized VMDK, as ESXi
// sends every disk (application/x-vnd.vmware-streamVmdk). vcsim serves
// the backing file as it is: a text descriptor there names files the
// stream does not hold, and is never imported as the disk.
func checkStream(br *bufio.Reader, s exportSpec) error {
	head, err := br.Peek(source.HeadBytes)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if len(head) == 0 {
		return fmt.Errorf("reading the export of %s: %w", what(s), io.ErrUnexpectedEOF)
	}
	kind, err := source.Detect(head, "auto")
	if err == nil && kind == source.KindStream {
		return nil
	}
	got := "data that is not a VMDK"
	if k, perr := vmdk.Probe(bytes.NewReader(head)); perr == nil {
		got = "a VMDK " + k.String() + " file"
	}
	return fmt.Errorf("%w: the export of %s sent %s, not a streamOptimized stream: the server serves disk files as they are (vcsim does); use --vsphere-transport datastore",
		ErrNotStream, what(s), got)
}

// watchedBody is the device URL's body, as read: how much, and how it
// ended. The stream reader reads it from its own goroutine.
type watchedBody struct {
	r  io.Reader
	mu sync.Mutex
	n  int64
	// end is the first error the body returned, io.EOF included.
	end error
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.mu.Lock()
	w.n += int64(n)
	if err != nil && w.end == nil {
		w.end = err
	}
	w.mu.Unlock()
	return n, err
}

func (w *watchedBody) state() (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.end
}

// drain reads what follows the stream's end: zero padding at most, then
// the body's clean end.
func (w *watchedBody) drain() error {
	buf := make([]byte, 32<<10)
	var after int64
	for {
		n, err := w.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("%w: data after the stream's end-of-stream marker", ErrNotStream)
			}
		}
		after += int64(n)
		if after > maxAfterEnd {
			return fmt.Errorf("%w: more than %d bytes after the stream's end-of-stream marker", ErrNotStream, maxAfterEnd)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after the end-of-stream marker: %w", err)
		}
	}
}

// cut is the error of an import that failed while the stream was read.
// A body that ended or broke first makes it ErrLease: whatever the
// reader made of the missing end (a truncated VMDK), the server or the
// network stopped the transfer, and a new lease may complete it. The
// lease's state says which, when the server set it in error.
func cut(ctx context.Context, lease *nfc.Lease, s exportSpec, w *watchedBody, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (exporting %s: %v)", cause, what(s), err)
	}
	n, end := w.state()
	if end == nil || !(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, end)) {
		return err
	}
	why := "the body ended"
	if end != io.EOF {
		why = end.Error()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if l, perr := lease.Properties(cctx, "state", "error"); perr == nil && l.State == types.HttpNfcLeaseStateError {
		why += "; the server set the lease in error: " + faultMessage(l.Error)
	}
	return fmt.Errorf("%w: the export of %s stopped after %d bytes, before the stream's end-of-stream marker (%s): retry", ErrLease, what(s), n, why)
}
