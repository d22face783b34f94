package vmdk

import "errors"

// Sentinel errors callers can branch on with errors.Is. Every error the
// package returns wraps one of these (ErrReadOnly included), a context's
// error or an I/O error, with the file and the structure that was wrong in
// its message; the one exception is an "internal error", a bug in this
// package (such as a recovered panic).
var (
	// ErrCorrupt: the image's metadata is inconsistent, out of bounds or
	// truncated.
	ErrCorrupt = errors.New("vmdk: corrupt image")
	// ErrUnsupported: a valid VMDK feature this package does not handle.
	ErrUnsupported = errors.New("vmdk: unsupported feature")
	// ErrChainBroken: a read needed the parent image but the child's
	// parentCID no longer matches the parent's CID, the parent is missing,
	// or the chain is cyclic or too deep.
	ErrChainBroken = errors.New("vmdk: backing chain broken")
	// ErrInsecurePath: an extent or parent path is absolute or escapes the
	// allowed directory.
	ErrInsecurePath = errors.New("vmdk: insecure path")
	// ErrNoAccess: a read touched a NOACCESS extent.
	ErrNoAccess = errors.New("vmdk: read of a NOACCESS extent")
	// ErrNotVMDK: the file is none of the VMDK kinds Probe recognises.
	ErrNotVMDK = errors.New("vmdk: not a VMDK file")
	// ErrInvalidOptions: an option or argument the call cannot take (a
	// size, grain size, adapter type, subformat, compression level or
	// version out of range, a Commit of an image with no backing file).
	// Values that are valid VMDK but beyond what this package writes
	// also wrap ErrUnsupported.
	ErrInvalidOptions = errors.New("vmdk: invalid options")
	// ErrOutOfRange: a read, write or block-status request outside the
	// disk, or a stream write behind what was already written.
	ErrOutOfRange = errors.New("vmdk: offset out of range")
)
