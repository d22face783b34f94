package main

import (
	"context"
	"errors"
	"io/fs"
	"syscall"

	"github.com/vmdkpop/vmdkpop/imager/result"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// importError is a failure with the reason its result reports and whether
// retrying could help.
type importError struct {
	reason    string
	permanent bool
	err       error
}

func (e *importError) Error() string { return e.err.Error() }
func (e *importError) Unwrap() error { return e.err }

func permanent(reason string, err error) error {
	return &importError{reason: reason, permanent: true, err: err}
}

func transient(reason string, err error) error {
	return &importError{reason: reason, err: err}
}

// errTerminated is the cause of the context a signal cancels.
var errTerminated = errors.New("terminated by a signal")

// classify maps an import error to its result reason and permanence: bad
// input stays bad however often it is retried; I/O and the network may not.
func classify(err error) (reason string, permanent bool) {
	var ie *importError
	var small *tooSmallError
	switch {
	case errors.Is(err, errTerminated) || errors.Is(err, context.Canceled):
		return result.ReasonTerminated, false
	case errors.As(err, &ie):
		return ie.reason, ie.permanent
	case errors.As(err, &small):
		return result.ReasonTargetTooSmall, true
	case errors.Is(err, vmdk.ErrUnsupported):
		return result.ReasonUnsupportedImage, true
	case errors.Is(err, vmdk.ErrChainBroken):
		return result.ReasonChainBroken, true
	case errors.Is(err, vmdk.ErrCorrupt), errors.Is(err, vmdk.ErrNotVMDK), errors.Is(err, vmdk.ErrInsecurePath), errors.Is(err, vmdk.ErrNoAccess):
		return result.ReasonInvalidImage, true
	case errors.Is(err, fs.ErrNotExist):
		return result.ReasonSourceNotFound, true
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return result.ReasonTargetError, true
	}
	return result.ReasonFailed, false
}
