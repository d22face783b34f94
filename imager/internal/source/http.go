package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// HTTPOptions configure HTTP(S) sources. Credentials come from files (a
// mounted Secret), never from the command line, where ps would show them.
type HTTPOptions struct {
	CAFile       string // PEM bundle of extra CAs
	TokenFile    string // a bearer token
	UserFile     string // basic auth, with PassFile
	PassFile     string
	CredsDir     string // a mounted Secret: token, or username and password
	Retries      int
	Backoff      time.Duration // the first wait between retries, doubled each time
	StallTimeout time.Duration // a connection delivering nothing this long is replaced
	Pace         Pace          // as is one delivering less than this
	// InsecureCreds allows credentials to go over plain http://.
	InsecureCreds bool
	// Connections is how many Range requests random-access reads keep in
	// flight (0 or 1: one at a time).
	Connections int
	// TLS, when set, is the trust the caller already settled (a vSphere
	// SDK's pinned thumbprint) and replaces CAFile's.
	TLS *tls.Config
	// SessionCookie is a vmware_soap_session the caller logged in for
	// (the vSphere SDK's): sent, like the jar's own session cookie, only
	// to the URL's host over https.
	SessionCookie string
}

// ErrCredentialsOverHTTP refuses to send credentials in the clear (at
// start it comes with ErrInvalidOptions; after a redirect, alone).
var ErrCredentialsOverHTTP = errors.New("credentials would be sent over plain http:// (give --insecure-allow-credentials-over-http to allow it)")

// httpClient fetches one URL with retries. url is what is requested;
// shown is what messages quote: without user info or query values, which
// may be credentials (a signed URL's token).
type httpClient struct {
	c     *http.Client
	url   string
	shown string
	opts  HTTPOptions
	auth  func(*http.Request)
	basic bool // auth is basic auth, which a session cookie replaces
	sess  *session
	log   io.Writer
}

func newHTTPClient(rawURL string, o HTTPOptions, log io.Writer) (*httpClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = o.StallTimeout
	tr.MaxIdleConnsPerHost = max(o.Connections, 1) + 2 // parallel Range requests reuse their connections
	switch {
	case o.TLS != nil:
		tr.TLSClientConfig = o.TLS.Clone()
	case o.CAFile != "":
		pem, err := readSmallFile(o.CAFile, maxCABundle)
		if err != nil {
			return nil, invalid(fmt.Errorf("--ca-file: %w", err))
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, invalid(fmt.Errorf("--ca-file %s: no PEM certificates in it", o.CAFile))
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, invalid(redactURLError(err))
	}
	// Credentials in the URL would be on the command line (ps, the Job's
	// spec) and Go would send them as basic auth with every request,
	// past the session logic: a login per Range request, and over plain
	// http:// unchecked. They come from files like the others.
	if u.User != nil {
		return nil, invalid(fmt.Errorf("%s: credentials in the URL (user:password@) are not taken: give them with --username-file and --password-file (or --credentials-dir, a mounted Secret), and the URL without them", jobapi.RedactURL(rawURL)))
	}
	jar, _ := cookiejar.New(nil) // never fails without options
	h := &httpClient{c: &http.Client{Transport: tr, Jar: jar}, url: rawURL, shown: jobapi.RedactURL(rawURL), opts: o, log: log, sess: &session{home: u}}
	creds, err := loadCredentials(o)
	if err != nil {
		return nil, err
	}
	switch {
	case creds.bearer:
		h.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+creds.token) }
	case creds.basic:
		h.auth = func(r *http.Request) { r.SetBasicAuth(creds.user, creds.pass) }
		h.basic = true
	}
	if o.SessionCookie != "" {
		if !strings.EqualFold(u.Scheme, "https") {
			return nil, invalid(fmt.Errorf("%s: a session cookie goes only to https://", h.shown))
		}
		// Secure: the jar never sends it to http://, even on the same
		// host; host-only: never to another host.
		jar.SetCookies(u, []*http.Cookie{{Name: sessionCookies[0], Value: o.SessionCookie, Path: "/", Secure: true}})
	}
	if h.auth != nil && !o.InsecureCreds && strings.EqualFold(u.Scheme, "http") {
		return nil, invalid(ErrCredentialsOverHTTP)
	}
	h.c.CheckRedirect = h.checkRedirect
	return h, nil
}

// credentials are what the credential flags name: a bearer token, or a
// basic-auth user and password.
type credentials struct {
	bearer     bool // a token was given (it may be empty)
	token      string
	basic      bool // user and pass were given (either may be empty)
	user, pass string
}

// loadCredentials reads the credential files o names (--credentials-dir
// first: a mounted Secret's token, or username and password).
func loadCredentials(o HTTPOptions) (credentials, error) {
	var c credentials
	if d := o.CredsDir; d != "" {
		exists := func(name string) bool { _, err := os.Stat(filepath.Join(d, name)); return err == nil }
		switch {
		case exists("token"):
			o.TokenFile = filepath.Join(d, "token")
		case exists("username") && exists("password"):
			o.UserFile, o.PassFile = filepath.Join(d, "username"), filepath.Join(d, "password")
		default:
			return c, invalid(fmt.Errorf("--credentials-dir %s: want a token file, or username and password files", d))
		}
	}
	read := func(flagName, path string) (string, error) {
		b, err := readSmallFile(path, maxCredential)
		if err != nil {
			return "", invalid(fmt.Errorf("%s: %w", flagName, err))
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	var err error
	switch {
	case o.TokenFile != "":
		c.bearer = true
		c.token, err = read("--bearer-token-file", o.TokenFile)
	case o.UserFile != "" || o.PassFile != "":
		if o.UserFile == "" || o.PassFile == "" {
			return c, invalid(errors.New("--username-file and --password-file go together"))
		}
		c.basic = true
		if c.user, err = read("--username-file", o.UserFile); err == nil {
			c.pass, err = read("--password-file", o.PassFile)
		}
	}
	return c, err
}

// BasicAuth is the user name and password the credential flags of o name
// (--credentials-dir's username and password, or --username-file and
// --password-file), for a login of its own (a vSphere SDK session); a
// token, or no credentials, is an ErrInvalidOptions.
func BasicAuth(o HTTPOptions) (user, pass string, err error) {
	c, err := loadCredentials(o)
	switch {
	case err != nil:
		return "", "", err
	case c.bearer:
		return "", "", invalid(errors.New("a bearer token does not log in to vSphere: give username and password files (--credentials-dir)"))
	case !c.basic:
		return "", "", invalid(errors.New("no credentials: give username and password files (--credentials-dir, or --username-file and --password-file)"))
	}
	return c.user, c.pass, nil
}

// checkRedirect refuses redirects that would leak credentials: Go
// forwards Authorization on a redirect to the same host name, also from
// https:// down to http:// and to another port; and while credentials or
// a session cookie are in play, to any other host at all (their
// datastore's files never come from elsewhere). Without them a redirect
// is followed: a CDN, an object store, a release asset. A session cookie
// is a credential too, held without credentials files when the server set
// one: the jar would send it to http:// on the same host, so a redirect
// from https:// down to http:// is refused while it is held (from a
// source that was http:// already it has travelled in the clear anyway).
func (h *httpClient) checkRedirect(req *http.Request, via []*http.Request) error {
	cookie := h.sessionCookie(h.sess.home) != ""
	secret := h.auth != nil || cookie && strings.EqualFold(h.sess.home.Scheme, "https")
	if secret && !h.opts.InsecureCreds && strings.EqualFold(req.URL.Scheme, "http") {
		return fmt.Errorf("redirected to %s: %w", jobapi.RedactURL(req.URL.String()), ErrCredentialsOverHTTP)
	}
	if (h.auth != nil || cookie) && !sameHost(req.URL, h.sess.home) {
		return fmt.Errorf("redirected to %s: %w", jobapi.RedactURL(req.URL.String()), ErrOtherHost)
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// get requests the URL from byte from (to byte to, inclusive, when to >=
// 0), retrying transient failures. A ranged request the server answers
// with the whole body (200) returns that response: callers check.
// validator, when set, is sent as If-Range so a changed file is noticed.
func (h *httpClient) get(ctx context.Context, from, to int64, validator string) (*http.Response, error) {
	var last error
	for attempt := 0; ; attempt++ {
		resp, err := h.getOnce(ctx, from, to, validator)
		if err == nil {
			return resp, nil
		}
		last = err
		if !errors.Is(err, ErrTransient) || ctx.Err() != nil || attempt >= h.opts.Retries {
			return nil, last
		}
		if err := h.wait(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

func (h *httpClient) wait(ctx context.Context, attempt int) error {
	d := h.opts.Backoff << min(attempt, 10)
	d = min(d, 30*time.Second)
	fmt.Fprintf(h.log, "imager: retrying in %v\n", d)
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (h *httpClient) getOnce(ctx context.Context, from, to int64, validator string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, invalid(redactURLError(err))
	}
	if from > 0 || to >= 0 {
		r := fmt.Sprintf("bytes=%d-", from)
		if to >= 0 {
			r += strconv.FormatInt(to, 10)
		}
		req.Header.Set("Range", r)
		if validator != "" {
			req.Header.Set("If-Range", validator)
		}
	}
	resp, err := h.do(req)
	var cert *tls.CertificateVerificationError
	if errors.Is(err, ErrCredentialsOverHTTP) || errors.Is(err, ErrOtherHost) || errors.As(err, &cert) {
		// CheckRedirect's refusal, or a certificate that does not verify
		// against the CAs given: the next attempt fails the same way.
		return nil, redactURLError(err)
	}
	if err != nil {
		return nil, transient(redactURLError(err))
	}
	ranged := req.Header.Get("Range") != ""
	switch c := resp.StatusCode; {
	case c == http.StatusPartialContent && !ranged:
		resp.Body.Close()
		return nil, protocolErr(fmt.Errorf("%s: a 206 reply to a request for the whole file", h.shown))
	case c == http.StatusOK || c == http.StatusPartialContent:
		return resp, nil
	default:
		resp.Body.Close()
		return nil, &HTTPStatusError{URL: h.shown, Status: resp.Status, Code: c}
	}
}

// redactURLError redacts the URL a *url.Error quotes (net/http's errors
// are: `Get "https://user:***@host/x?sig=...": ...` keeps the user name
// and the query).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = jobapi.RedactURL(ue.URL)
	}
	return err
}

// validator identifies the version of the file a response carries.
func validator(resp *http.Response) string {
	if e := resp.Header.Get("ETag"); e != "" && !strings.HasPrefix(e, "W/") {
		return e
	}
	return resp.Header.Get("Last-Modified")
}

// HTTPStream reads the URL from start to end. A connection that fails or
// stalls is replaced: by a Range request from where it stopped when the
// server supports ranges, else by a new request whose already-read prefix
// is discarded.
type HTTPStream struct {
	h         *httpClient
	ctx       context.Context
	body      io.ReadCloser // a watchedBody, or an exactBody around one
	pos       int64
	size      int64 // -1: unknown
	rangeOK   bool
	validator string
	failures  int   // consecutive failures without recovering
	resumedAt int64 // pos when the connection was last replaced
}

// OpenHTTP starts reading rawURL; log gets a line per retry.
func OpenHTTP(ctx context.Context, rawURL string, o HTTPOptions, log io.Writer) (*HTTPStream, error) {
	h, err := newHTTPClient(rawURL, o, log)
	if err != nil {
		return nil, err
	}
	return openHTTPStream(ctx, h)
}

// Size is the length the server announced (-1: unknown).
func (s *HTTPStream) Size() int64 { return s.size }

// RangeOK: the server accepts Range requests, so ReaderAt works.
func (s *HTTPStream) RangeOK() bool { return s.rangeOK }

// ReaderAt reads the same URL (the same version of it) at random offsets
// with Range requests, size bytes in all.
func (s *HTTPStream) ReaderAt(ctx context.Context, size int64) io.ReaderAt {
	return newHTTPReaderAt(ctx, s.h, size, s.validator, newBlockPool(s.h.opts.Connections))
}

func openHTTPStream(ctx context.Context, h *httpClient) (*HTTPStream, error) {
	s := &HTTPStream{h: h, ctx: ctx, size: -1}
	resp, err := s.request(0)
	if err != nil {
		return nil, err
	}
	s.rangeOK = resp.Header.Get("Accept-Ranges") == "bytes"
	s.validator = validator(resp)
	s.size = resp.ContentLength
	return s, nil
}

// request opens the body at byte from, watched: a connection that stalls
// or trickles is cut.
func (s *HTTPStream) request(from int64) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	resp, err := s.h.get(ctx, from, -1, s.validator)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = watch(ctx, cancel, resp.Body, s.h.opts, "the reply")
	s.body = resp.Body
	return resp, nil
}

func (s *HTTPStream) Read(p []byte) (int, error) {
	for {
		n, err := s.body.Read(p)
		s.pos += int64(n)
		if s.pos-s.resumedAt >= s.h.opts.Pace.enough() {
			s.failures = 0
		}
		if err == nil || n > 0 {
			return n, nil
		}
		if err == io.EOF && (s.size < 0 || s.pos == s.size) {
			return 0, io.EOF
		}
		if s.ctx.Err() != nil {
			return 0, context.Cause(s.ctx)
		}
		if errors.Is(err, ErrProtocol) {
			return 0, err // a reply that is not the range asked for: no retry makes it one
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err := s.resume(err); err != nil {
			return 0, err
		}
	}
}

// resume replaces a failed connection, keeping the position.
func (s *HTTPStream) resume(cause error) error {
	s.closeBody()
	s.failures++
	if s.failures > s.h.opts.Retries {
		return transient(fmt.Errorf("%s: at byte %d: %w (gave up after %d retries)", s.h.shown, s.pos, cause, s.h.opts.Retries))
	}
	fmt.Fprintf(s.h.log, "imager: download interrupted at byte %d: %v\n", s.pos, cause)
	if err := s.h.wait(s.ctx, s.failures-1); err != nil {
		return err
	}
	s.resumedAt = s.pos
	from := int64(0)
	if s.rangeOK {
		from = s.pos
	}
	resp, err := s.request(from)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusPartialContent {
		body, size, err := checkPartial(resp, s.h.shown, s.pos, -1, s.size)
		if err != nil {
			s.closeBody()
			return err
		}
		s.body, s.size = body, size
		return nil
	}
	// A whole body to a Range request: the server dropped the range it
	// accepted, or (If-Range) the file changed. Either way the bytes are
	// not the rest of what was read so far.
	if from > 0 {
		s.closeBody()
		return protocolErr(fmt.Errorf("%s: asked for bytes from %d, got the whole file (it changed, or the server ignores ranges)", s.h.shown, from))
	}
	// A new whole body from a server without ranges: its prefix is
	// discarded, if it is still the same file.
	if v := validator(resp); s.validator != "" && v != s.validator || s.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != s.size {
		s.closeBody()
		return protocolErr(fmt.Errorf("%s changed during the download", s.h.shown))
	}
	if _, err := io.CopyN(io.Discard, s.body, s.pos); err != nil {
		return s.resume(err)
	}
	return nil
}

func (s *HTTPStream) closeBody() {
	if s.body != nil {
		s.body.Close()
		s.body = nil
	}
}

func (s *HTTPStream) Close() error {
	s.closeBody()
	return nil
}
