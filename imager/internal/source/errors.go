// Package source reads what an import copies from: a local file, stdin,
// an http(s) URL (Range requests, resumed and retried), an OVA's disk, a
// gzip or zstd stream; and tells from the first bytes what they hold.
//
// Its errors are typed (*HTTPStatusError) or carry one of the sentinels
// below; the command that runs the import decides what they mean for its
// result and exit code.
package source

import "errors"

var (
	// ErrTransient: a retry may work (a network failure, a 5xx, retries
	// that ran out).
	ErrTransient = errors.New("source: transient failure")
	// ErrNotFound: the source does not exist (HTTP 404, 410).
	ErrNotFound = errors.New("source: not found")
	// ErrUnauthorized: the credentials do not let imager read it (401, 403).
	ErrUnauthorized = errors.New("source: unauthorized")
	// ErrInvalidOptions: the options cannot work (a CA file without
	// certificates, half a basic-auth pair, an OVA disk not in the OVF).
	ErrInvalidOptions = errors.New("source: invalid options")
	// ErrProtocol: the server broke a promise (ignored a Range it
	// accepted, answered another range, changed the file mid-download).
	ErrProtocol = errors.New("source: the server broke the protocol")
	// ErrFormat: the source is damaged (an OVA, a gzip or zstd stream).
	ErrFormat = errors.New("source: damaged")
	// ErrUnsupported: a format imager does not read (qcow2, VHD, an OVA
	// disk's compression other than gzip).
	ErrUnsupported = errors.New("source: unsupported format")
	// ErrInUse: the server refuses a file something holds open (ESXi
	// locks the disks of a running VM); it can be read once released.
	ErrInUse = errors.New("source: in use")
	// ErrChecksum: a member of an OVA does not match its manifest (or
	// the manifest does not list it): the package was damaged or altered.
	ErrChecksum = errors.New("source: checksum mismatch")
	// ErrTruncated: the source ended before what it announced (an OVA
	// cut inside a member): a new download may be whole.
	ErrTruncated = errors.New("source: ended early")
	// ErrOtherHost: a datastore's file would come from another host,
	// which its credentials and session must never reach.
	ErrOtherHost = errors.New("source: another host")
)

// tagged is err carrying a sentinel, with err's own message.
type tagged struct{ err, tag error }

func (t *tagged) Error() string   { return t.err.Error() }
func (t *tagged) Unwrap() []error { return []error{t.err, t.tag} }

func tag(s error, err error) error { return &tagged{err: err, tag: s} }

func transient(err error) error   { return tag(ErrTransient, err) }
func invalid(err error) error     { return tag(ErrInvalidOptions, err) }
func protocolErr(err error) error { return tag(ErrProtocol, err) }
func damaged(err error) error     { return tag(ErrFormat, err) }
func unsupported(err error) error { return tag(ErrUnsupported, err) }

// HTTPStatusError is a response that is not the content.
type HTTPStatusError struct {
	URL    string // redacted
	Status string
	Code   int
}

func (e *HTTPStatusError) Error() string { return e.URL + ": " + e.Status }

// Unwrap says what the status means: ErrNotFound, ErrUnauthorized,
// ErrInUse, ErrTransient, or nothing (a status no retry changes).
func (e *HTTPStatusError) Unwrap() error {
	switch c := e.Code; {
	case c == 404 || c == 410:
		return ErrNotFound
	case c == 401 || c == 403:
		return ErrUnauthorized
	case c == 409 || c == 423: // Conflict, Locked: what a file server says of a file in use
		return ErrInUse
	case c == 408 || c == 429 || c >= 500:
		return ErrTransient
	}
	return nil
}
