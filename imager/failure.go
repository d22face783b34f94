package main

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Failures the commands themselves find, beyond what vmdk, the source and
// the target report. They carry the command's message; classify gives
// them their reasons.
var (
	// errBadRequest: arguments that are wrong, but only the filesystem
	// or the source can tell (an output that is a file of the source, a
	// --size smaller than the source): exit 3, not 2.
	errBadRequest = errors.New("the arguments cannot work")
	// errChecksumMismatch: the source is not the one asked for.
	errChecksumMismatch = errors.New("checksum mismatch")
	// errTruncated: the source ended before its announced length; a new
	// download may not.
	errTruncated = errors.New("the source ended early")
	// errDeadline: the import ran past --deadline; the next attempt may
	// be faster (another node, a less loaded server or network).
	errDeadline = errors.New("deadline exceeded")
)

// failure is err, with its message, standing for kind (one of the errors
// above) too.
type failure struct{ err, kind error }

func (f *failure) Error() string   { return f.err.Error() }
func (f *failure) Unwrap() []error { return []error{f.err, f.kind} }

func failed(kind, err error) error { return &failure{err: err, kind: kind} }

// usageError is a command line that is wrong by itself: an unknown flag, a
// missing or extra argument, a bad size or -o value. It is found before any
// work starts and no retry can fix it (exit 2; check exits 64). flags,
// when set, is the command's flag set, for -h.
type usageError struct {
	err   error
	flags *flag.FlagSet
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// asUsage marks err, found while reading the command line, as a usage error.
func asUsage(err error) error {
	var ue *usageError
	if err == nil || errors.As(err, &ue) {
		return err
	}
	return &usageError{err: err}
}

// errTerminated is the cause of the context a signal cancels.
var errTerminated = errors.New("terminated by a signal")

// terminated: err is the end of a command stopped by a signal (the root
// context's cancellation, or import's own cause for it).
func terminated(err error) bool {
	return errors.Is(err, errTerminated) || errors.Is(err, context.Canceled)
}

// classify is the one place that maps an error to its result reason and
// permanence: bad input stays bad however often it is retried; the network,
// I/O and space others may free may not. README's "Exit codes and reasons"
// is this table.
func classify(err error) (reason string, permanent bool) {
	var (
		te  *target.Error
		soe *source.OpenError
	)
	onTarget := errors.As(err, &te)
	reason, permanent = classifyCause(err, onTarget)
	// What the table does not name about opening the target or a local
	// source (a name too long, a loop of symlinks) fails the same way on
	// every attempt.
	switch {
	case reason != jobapi.ReasonFailed:
	case onTarget && te.Open:
		return jobapi.ReasonTargetError, true
	case errors.As(err, &soe):
		return jobapi.ReasonSourceNotFound, true
	}
	return reason, permanent
}

// classifyCause is classify's table; onTarget: err is the target's.
func classifyCause(err error, onTarget bool) (reason string, permanent bool) {
	var (
		ue     *usageError
		small  *target.TooSmallError
		cert   *tls.CertificateVerificationError
		status *source.HTTPStatusError
	)
	switch {
	case terminated(err):
		return jobapi.ReasonTerminated, false
	case errors.As(err, &ue):
		return jobapi.ReasonInvalidArguments, true
	case errors.As(err, &cert):
		// A certificate that does not verify against the CAs given will
		// not on the next attempt either.
		return jobapi.ReasonSourceError, true
	case errors.Is(err, errBadRequest):
		return jobapi.ReasonInvalidArguments, true
	case errors.Is(err, errChecksumMismatch), errors.Is(err, source.ErrChecksum):
		return jobapi.ReasonChecksumMismatch, true
	case errors.Is(err, errTruncated), errors.Is(err, source.ErrTruncated):
		return jobapi.ReasonSourceError, false
	case errors.Is(err, errDeadline):
		return jobapi.ReasonDeadlineExceeded, false
	// A vSphere source's: what the SDK said of the VM, its disk and
	// its session, before the datastore reads' own (source's) below.
	case errors.Is(err, vsphere.ErrInUse):
		// Transient: the controller retries until the VM is off.
		return jobapi.ReasonSourceInUse, false
	case errors.Is(err, vsphere.ErrInvalidOptions):
		return jobapi.ReasonInvalidArguments, true
	case errors.Is(err, vsphere.ErrNotFound):
		return jobapi.ReasonSourceNotFound, true
	case errors.Is(err, vsphere.ErrUnauthorized):
		return jobapi.ReasonUnauthorized, true
	case errors.Is(err, vsphere.ErrUnsupported):
		return jobapi.ReasonUnsupportedImage, true
	case errors.Is(err, vsphere.ErrChainBroken):
		return jobapi.ReasonChainBroken, true
	case errors.Is(err, vsphere.ErrTransient):
		return jobapi.ReasonNetworkError, false
	case errors.Is(err, vsphere.ErrLease):
		return jobapi.ReasonLeaseFailed, false
	case errors.Is(err, vsphere.ErrDeviceURL):
		// Not https, another host not trusted: the next lease names the
		// same.
		return jobapi.ReasonSourceError, true
	case errors.Is(err, vsphere.ErrNotStream):
		return jobapi.ReasonUnsupportedImage, true
	// The source's errors, in its own words.
	case errors.Is(err, source.ErrInUse):
		// Before Unauthorized: ESXi's refusal of a locked file is a 403.
		return jobapi.ReasonSourceInUse, false
	case errors.Is(err, source.ErrInvalidOptions), errors.Is(err, source.ErrNoScratch):
		return jobapi.ReasonInvalidArguments, true
	case errors.Is(err, source.ErrNotFound):
		return jobapi.ReasonSourceNotFound, true
	case errors.Is(err, source.ErrUnauthorized):
		return jobapi.ReasonUnauthorized, true
	case errors.Is(err, source.ErrTransient), errors.Is(err, source.ErrTooSlow):
		return jobapi.ReasonNetworkError, false
	case errors.As(err, &status), errors.Is(err, source.ErrProtocol), errors.Is(err, source.ErrCredentialsOverHTTP), errors.Is(err, source.ErrOtherHost):
		return jobapi.ReasonSourceError, true
	case errors.Is(err, source.ErrFormat):
		return jobapi.ReasonInvalidImage, true
	case errors.Is(err, source.ErrUnsupported):
		return jobapi.ReasonUnsupportedImage, true
	case errors.As(err, &small):
		return jobapi.ReasonTargetTooSmall, true
	case errors.Is(err, vmdk.ErrInvalidOptions):
		// An argument the images contradict (a commit without a backing
		// file, a rebase onto the image itself).
		return jobapi.ReasonInvalidArguments, true
	case errors.Is(err, vmdk.ErrUnsupported):
		return jobapi.ReasonUnsupportedImage, true
	case errors.Is(err, vmdk.ErrChainBroken):
		return jobapi.ReasonChainBroken, true
	case errors.Is(err, vmdk.ErrCorrupt), errors.Is(err, vmdk.ErrNotVMDK), errors.Is(err, vmdk.ErrInsecurePath), errors.Is(err, vmdk.ErrNoAccess),
		errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, tar.ErrInsecurePath): // a damaged OVA
		return jobapi.ReasonInvalidImage, true
	case errors.Is(err, vmdk.ErrReadOnly): // an image whose extents are read-only, written to
		return jobapi.ReasonReadOnlyTarget, true
	case errors.Is(err, syscall.EFBIG):
		return jobapi.ReasonFileTooLarge, true
	case errors.Is(err, syscall.EROFS):
		return jobapi.ReasonReadOnlyTarget, true
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// volumeTooSmall has already made this TargetTooSmall where the
		// volume could never hold the disk; here it could: other files
		// hold the space, and they may go.
		return jobapi.ReasonNoSpace, false
	case errors.Is(err, fs.ErrPermission):
		if onTarget {
			return jobapi.ReasonTargetNotWritable, true
		}
		return jobapi.ReasonUnauthorized, true
	case errors.Is(err, fs.ErrNotExist):
		if onTarget {
			return jobapi.ReasonTargetError, true
		}
		return jobapi.ReasonSourceNotFound, true
	case errors.Is(err, syscall.EIO):
		// A volume's I/O error may be its path or node, which the next
		// pod may not share; a disk that is really bad fails again, and
		// the Job's backoff limit bounds the attempts.
		return jobapi.ReasonIOError, false
	}
	return jobapi.ReasonFailed, false
}

// exitCode is the exit code of a command that failed with err: 2 usage,
// 3 permanent, 143 terminated, 1 anything a retry may fix.
func exitCode(err error) int {
	if err == nil {
		return jobapi.ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return jobapi.ExitUsage
	}
	switch reason, perm := classify(err); {
	case reason == jobapi.ReasonTerminated:
		return jobapi.ExitTerminated
	case perm:
		return jobapi.ExitPermanent
	}
	return jobapi.ExitTransient
}
