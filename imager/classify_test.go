package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// classify's table for the typed errors of the packages below imager:
// the reasons README's "Exit codes and reasons" lists, whichever layer
// wrapped them.
func TestClassifyTypedErrors(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	for _, c := range []struct {
		err       error
		reason    string
		permanent bool
	}{
		{&source.HTTPStatusError{Code: 404}, jobapi.ReasonSourceNotFound, true},
		{&source.HTTPStatusError{Code: 403}, jobapi.ReasonUnauthorized, true},
		{&source.HTTPStatusError{Code: 503}, jobapi.ReasonNetworkError, false},
		{&source.HTTPStatusError{Code: 400}, jobapi.ReasonSourceError, true},
		{&source.HTTPStatusError{Code: 409}, jobapi.ReasonSourceInUse, false},
		{&source.HTTPStatusError{Code: 423}, jobapi.ReasonSourceInUse, false},
		{source.InUse("vm-flat.vmdk", "https://esx/folder/vm-flat.vmdk", "403 Forbidden"), jobapi.ReasonSourceInUse, false},
		{fmt.Errorf("redirected: %w", source.ErrOtherHost), jobapi.ReasonSourceError, true},
		{source.ErrProtocol, jobapi.ReasonSourceError, true},
		{source.ErrCredentialsOverHTTP, jobapi.ReasonSourceError, true},
		{source.ErrInvalidOptions, jobapi.ReasonInvalidArguments, true},
		{source.ErrNoScratch, jobapi.ReasonInvalidArguments, true},
		{source.ErrFormat, jobapi.ReasonInvalidImage, true},
		{source.ErrUnsupported, jobapi.ReasonUnsupportedImage, true},
		{source.ErrTruncated, jobapi.ReasonSourceError, false}, // an OVA cut short: as a raw file that ends early
		// An NFC export: a lease's failure may pass, its URL and its
		// format stay.
		{vsphere.ErrLease, jobapi.ReasonLeaseFailed, false},
		{vsphere.ErrDeviceURL, jobapi.ReasonSourceError, true},
		{vsphere.ErrNotStream, jobapi.ReasonUnsupportedImage, true},
		// Resolving the disk: what the SDK says stays, but for the VM
		// running now and the network.
		{vsphere.ErrInUse, jobapi.ReasonSourceInUse, false},
		{vsphere.ErrInvalidOptions, jobapi.ReasonInvalidArguments, true},
		{vsphere.ErrNotFound, jobapi.ReasonSourceNotFound, true},
		{vsphere.ErrUnauthorized, jobapi.ReasonUnauthorized, true},
		{vsphere.ErrUnsupported, jobapi.ReasonUnsupportedImage, true},
		{vsphere.ErrChainBroken, jobapi.ReasonChainBroken, true},
		{vsphere.ErrTransient, jobapi.ReasonNetworkError, false},
		{&source.OpenError{Err: syscall.ENOENT}, jobapi.ReasonSourceNotFound, true},
		{&source.OpenError{Err: syscall.ELOOP}, jobapi.ReasonSourceNotFound, true},
		{&source.OpenError{Err: syscall.EIO}, jobapi.ReasonIOError, false},
		{target.Mark(syscall.EACCES), jobapi.ReasonTargetNotWritable, true},
		{target.Mark(syscall.ENOENT), jobapi.ReasonTargetError, true},
		{target.MarkOpen(syscall.ENAMETOOLONG), jobapi.ReasonTargetError, true},
		{target.Mark(syscall.ENAMETOOLONG), jobapi.ReasonFailed, false},
		{target.Mark(syscall.ENOSPC), jobapi.ReasonNoSpace, false},
		{&target.TooSmallError{Msg: "small"}, jobapi.ReasonTargetTooSmall, true},
		{os.ErrPermission, jobapi.ReasonUnauthorized, true},
		{vmdk.ErrCorrupt, jobapi.ReasonInvalidImage, true},
		{vmdk.ErrInvalidOptions, jobapi.ReasonInvalidArguments, true},
		{fmt.Errorf("%w: %w", vmdk.ErrInvalidOptions, vmdk.ErrChainBroken), jobapi.ReasonInvalidArguments, true},
		{failed(errChecksumMismatch, errors.New("sum")), jobapi.ReasonChecksumMismatch, true},
		{failed(errTruncated, errors.New("short")), jobapi.ReasonSourceError, false},
		{failed(errDeadline, errors.New("late")), jobapi.ReasonDeadlineExceeded, false},
		{source.ErrTooSlow, jobapi.ReasonNetworkError, false},
		{context.Canceled, jobapi.ReasonTerminated, false},
	} {
		for _, err := range []error{c.err, wrap(c.err)} {
			if reason, perm := classify(err); reason != c.reason || perm != c.permanent {
				t.Errorf("%v: %s permanent=%v, want %s permanent=%v", err, reason, perm, c.reason, c.permanent)
			}
		}
	}
}
