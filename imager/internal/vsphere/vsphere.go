// Package vsphere finds a VM's disk on a vCenter or an ESXi host and the
// files it is made of, with govmomi: Connect logs in to the SDK, Resolve
// turns "this VM, this disk, as of this snapshot" into the disk's backing
// chain (the files, top first, and their datastore /folder URLs), and
// OpenChain reads that chain in place over the datastore's /folder API
// with the SDK's session (no VDDK), or Export streams the disk from an
// NFC export lease (transport nfc).
//
// Its errors carry the sentinels below, which the command that runs the
// import maps to reasons and exit codes.
package vsphere

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
)

var (
	// ErrInvalidOptions: the options cannot work (not https, a
	// thumbprint that is not one, no credentials).
	ErrInvalidOptions = errors.New("vsphere: invalid options")
	// ErrUnauthorized: the server refuses the credentials.
	ErrUnauthorized = errors.New("vsphere: unauthorized")
	// ErrNotFound: no such VM, disk or snapshot.
	ErrNotFound = errors.New("vsphere: not found")
	// ErrInUse: the disk cannot be read now without reading a file the
	// VM writes (a running VM without a snapshot); it can once the VM is
	// off.
	ErrInUse = errors.New("vsphere: in use")
	// ErrUnsupported: a disk this transport cannot read (an RDM, vSAN).
	ErrUnsupported = errors.New("vsphere: unsupported disk")
	// ErrChainBroken: the backing chain vSphere reports is not one that
	// can be read (a loop, too deep, not what the descriptors link).
	ErrChainBroken = errors.New("vsphere: broken backing chain")
	// ErrTransient: a retry may work (the network, a server error, an
	// inaccessible datastore).
	ErrTransient = errors.New("vsphere: transient failure")
)

// tagged is err carrying a sentinel, with err's own message.
type tagged struct{ err, tag error }

func (t *tagged) Error() string   { return t.err.Error() }
func (t *tagged) Unwrap() []error { return []error{t.err, t.tag} }

func tag(s error, format string, a ...any) error {
	return &tagged{err: fmt.Errorf(format, a...), tag: s}
}

// Options say where the SDK is and how to trust and log in to it.
type Options struct {
	// URL is the SDK endpoint, https://host/sdk; a bare https://host
	// means the same.
	URL string
	// Thumbprint pins the server's certificate: its SHA-1 or SHA-256,
	// hex, with or without colons, in any case. Without it the system's
	// roots and HTTP.CAFile's are trusted.
	Thumbprint string
	// HTTP are the HTTP source's options: credentials (CredsDir's
	// username and password files, or UserFile and PassFile), CAFile,
	// and what the datastore reads use (retries, connections, pace).
	HTTP source.HTTPOptions
	// Log gets a line per notable event (nil: none).
	Log io.Writer
}

// Client is a logged-in session with the SDK of a vCenter or an ESXi host.
type Client struct {
	// Vim is the SDK client, for what this package does not do (an NFC
	// export).
	Vim  *vim25.Client
	sdk  *url.URL // the SDK's URL, without credentials
	tls  *tls.Config
	sess *session.Manager
	opts Options
	log  io.Writer
}

// keepAliveIdle is how long the session may idle before a keepalive
// call: well inside the 30 minutes after which hosts end it.
var keepAliveIdle = 5 * time.Minute

// keepAliveTimeout bounds one keepalive call.
const keepAliveTimeout = 30 * time.Second

// loginTimeout bounds connecting and logging in: a host that accepts the
// connection and says nothing must not hold the import.
const loginTimeout = 2 * time.Minute

// Connect logs in to the SDK at o.URL with the username and password from
// o.HTTP's credential files. Close logs out.
func Connect(ctx context.Context, o Options) (*Client, error) {
	u, err := sdkURL(o.URL)
	if err != nil {
		return nil, err
	}
	user, pass, err := source.BasicAuth(o.HTTP)
	if err != nil {
		return nil, tag(ErrInvalidOptions, "%s: %w", u.Host, err)
	}
	cfg, err := tlsConfig(u.Hostname(), o.Thumbprint, o.HTTP.CAFile)
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	sc := soap.NewClient(u, false)
	t := sc.DefaultTransport()
	// Our config, and the standard dialer: soap's own DialTLSContext
	// retries an untrusted certificate against its thumbprint table,
	// which compares in one spelling only and hides the server's.
	t.TLSClientConfig = cfg
	t.DialTLSContext = nil
	t.ResponseHeaderTimeout = loginTimeout
	// The HTTP status of the replies, for what a failure to connect
	// means (a 404: not the SDK's URL).
	replies := &statusNote{rt: t}
	sc.Client.Transport = replies
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, connectError(u, err, int(replies.last.Load()))
	}
	// Hosts end a session idle for 30 minutes (vCenter's and hostd's
	// default); an import reading a large disk from the datastore talks
	// to the SDK only at its start and end, and its /folder reads ride
	// the same session: a keepalive holds it from Login to Logout.
	// govmomi's keepalive stops for good at its first failed call; a
	// blip of the network must not end the session an hour-long read
	// rides, so a failure is logged and the next call made as usual.
	rt := vc.RoundTripper
	var failing atomic.Bool
	vc.RoundTripper = keepalive.NewHandlerSOAP(rt, keepAliveIdle, func() error {
		holdSession(rt, u.Host, log, &failing)
		return nil
	})
	sm := session.NewManager(vc)
	if err := sm.Login(ctx, url.UserPassword(user, pass)); err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return nil, tag(ErrUnauthorized, "%s: the user name or password is wrong (InvalidLogin): check the credentials Secret's username and password", u.Host)
		}
		return nil, connectError(u, err, int(replies.last.Load()))
	}
	if vc.SessionCookie() == nil {
		_ = sm.Logout(context.WithoutCancel(ctx))
		return nil, tag(ErrUnauthorized, "%s: logged in, but the server set no %s cookie to read its datastores with", u.Host, soap.SessionCookieName)
	}
	return &Client{Vim: vc, sdk: u, tls: cfg, sess: sm, opts: o, log: log}, nil
}

// holdSession makes one call that holds the session, bounded in time; a
// failure is logged (once until a call succeeds), not returned, which
// would stop the keepalive.
func holdSession(rt soap.RoundTripper, host string, log io.Writer, failing *atomic.Bool) {
	ctx, cancel := context.WithTimeout(context.Background(), keepAliveTimeout)
	defer cancel()
	_, err := methods.GetCurrentTime(ctx, rt)
	if err != nil && !failing.Swap(true) {
		fmt.Fprintf(log, "imager: %s: a keepalive of the SDK session failed (retried every %v): %v\n", host, keepAliveIdle, err)
	}
	if err == nil {
		failing.Store(false)
	}
}

// relogin logs in again with the credentials Connect read: after a
// long read, the session may have ended (the host's idle timeout through
// a longer outage, a restart of its SDK service) though the credentials
// are still good.
func (c *Client) relogin(ctx context.Context) error {
	user, pass, err := source.BasicAuth(c.opts.HTTP)
	if err != nil {
		return tag(ErrInvalidOptions, "%s: %w", c.sdk.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	if err := c.sess.Login(ctx, url.UserPassword(user, pass)); err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return tag(ErrUnauthorized, "%s: logging in again, the user name or password is wrong (InvalidLogin): check the credentials Secret's username and password", c.sdk.Host)
		}
		return connectError(c.sdk, err, 0)
	}
	fmt.Fprintf(c.log, "imager: %s: the SDK session had ended; logged in again\n", c.sdk.Host)
	return nil
}

// Close logs out: hosts limit the sessions a user may hold.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.sess.Logout(ctx)
}

// TLS is the trust Connect settled (the pinned thumbprint, or the roots),
// for other connections to the same servers (an NFC lease's host).
func (c *Client) TLS() *tls.Config { return c.tls.Clone() }

// HTTPOptions are the options of the datastore reads: Options.HTTP with
// the SDK's trust and session cookie, which the HTTP client sends only to
// the SDK's host over https.
func (c *Client) HTTPOptions() source.HTTPOptions {
	o := c.opts.HTTP
	o.TLS = c.TLS()
	if ck := c.Vim.SessionCookie(); ck != nil {
		o.SessionCookie = ck.Value
	}
	return o
}

// IsVC: the server is a vCenter (not an ESXi host on its own).
func (c *Client) IsVC() bool { return c.Vim.IsVC() }

// sdkURL is the SDK's URL: https only, /sdk when no path is given, no
// credentials (they come from files).
func sdkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, tag(ErrInvalidOptions, "--vsphere-url: %w", err)
	case !strings.EqualFold(u.Scheme, "https"):
		return nil, tag(ErrInvalidOptions, "--vsphere-url %q: want https:// (the session and the disk's bytes must not travel in the clear)", raw)
	case u.Host == "":
		return nil, tag(ErrInvalidOptions, "--vsphere-url %q: no host", raw)
	case u.User != nil:
		return nil, tag(ErrInvalidOptions, "--vsphere-url: credentials in the URL are not taken: give them with --credentials-dir (username and password files)")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, tag(ErrInvalidOptions, "--vsphere-url %q: want no query or fragment", raw)
	}
	u.Scheme = "https"
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	return u, nil
}

// connectError says what a failure to reach or talk to the SDK means: a
// certificate that is not trusted will not be on the next attempt, nor a
// URL that is not an SDK's; the network may be. status is the HTTP status
// of the last reply (0: none known).
func connectError(u *url.URL, err error, status int) error {
	var (
		cve *tls.CertificateVerificationError
		ue  *UntrustedError
		xu  xml.UnmarshalError // govmomi's own encoding/xml
		xs  *xml.SyntaxError
	)
	switch {
	case errors.As(err, &ue):
		return err
	case errors.As(err, &cve):
		return untrusted(u.Host, cve.UnverifiedCertificates, cve)
	case soap.IsSoapFault(err), soap.IsVimFault(err):
		if fault.Is(err, &types.NotAuthenticated{}) || fault.Is(err, &types.NoPermission{}) {
			return tag(ErrUnauthorized, "%s: %w", u.Host, err)
		}
		return tag(ErrTransient, "%s: %w", u.Host, err)
	case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests,
		status == http.StatusOK && (errors.As(err, &xu) || errors.As(err, &xs) || errors.Is(err, io.EOF)):
		// A 404, or a web page where a SOAP envelope should be (a
		// body with no XML element ends in a clean EOF; one cut short
		// is ErrUnexpectedEOF): the URL is a web server's but not its
		// SDK's (a typo'd path, the vSphere Client's), and stays so.
		return tag(ErrInvalidOptions, "--vsphere-url %s is not a vSphere SDK endpoint (want https://host/sdk): %v", u.Redacted(), err)
	}
	// Refused, reset, timed out, a proxy's 5xx: the network's, which
	// may heal.
	return tag(ErrTransient, "%s: %w", u.Host, err)
}

// statusNote passes requests to rt and notes the status of the last
// reply, which soap's errors keep to themselves.
type statusNote struct {
	rt   http.RoundTripper
	last atomic.Int32
}

func (n *statusNote) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := n.rt.RoundTrip(req)
	if err == nil {
		n.last.Store(int32(res.StatusCode))
	}
	return res, err
}
