package vsphere

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/sim25"
)

// colons spells a hex thumbprint as vSphere shows it: AB:CD:... .
func colons(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// The server is trusted by its SHA-1 or SHA-256 thumbprint, in any of the
// spellings users copy, or by a CA file; anything else is refused, naming
// the certificate's thumbprints.
func TestConnectTrust(t *testing.T) {
	s := newSim(t, simulator.ESX())
	wrong := []byte(s.sha256)
	wrong[len(wrong)-1] ^= 1 // one hex digit off ('0' <-> '1', 'a' <-> '`' is not hex: pick a digit)
	if wrong[len(wrong)-1] == '`' {
		wrong[len(wrong)-1] = 'b'
	}
	for _, tc := range []struct {
		name, thumbprint, caFile string
		ok                       bool
	}{
		{name: "SHA-256, lower case, no colons", thumbprint: s.sha256, ok: true},
		{name: "SHA-256, upper case, colons", thumbprint: strings.ToUpper(colons(s.sha256)), ok: true},
		{name: "SHA-1, upper case, colons", thumbprint: strings.ToUpper(colons(s.sha1)), ok: true},
		{name: "SHA-1, lower case, colons", thumbprint: colons(s.sha1), ok: true},
		{name: "CA file", caFile: s.caFile, ok: true},
		{name: "wrong SHA-256", thumbprint: string(wrong)},
		{name: "system roots only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s.options()
			o.Thumbprint, o.HTTP.CAFile = tc.thumbprint, tc.caFile
			c, err := Connect(context.Background(), o)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			var ue *UntrustedError
			var cve *tls.CertificateVerificationError
			if !errors.As(err, &ue) || !errors.As(err, &cve) {
				t.Fatalf("%v (%T): want an UntrustedError, a certificate verification failure", err, err)
			}
			for _, want := range []string{strings.ToUpper(colons(s.sha1)), strings.ToUpper(colons(s.sha256))} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%v: want the server's thumbprint %s in it", err, want)
				}
			}
		})
	}
	o := s.options()
	o.HTTP.CAFile = s.caFile
	if _, err := Connect(context.Background(), o); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("thumbprint and CA file: %v", err)
	}
}

func TestParseThumbprint(t *testing.T) {
	for _, bad := range []string{"", "AB:C", "AB::CD", strings.Repeat("zz", 20), strings.Repeat("ab", 21), strings.Repeat("ab", 16), "AB CD"} {
		if _, err := parseThumbprint(bad); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for in, want := range map[string]string{
		strings.Repeat("aB", 20):              "SHA-1",
		colons(strings.Repeat("0f", 32)):      "SHA-256",
		" " + strings.Repeat("AB", 32) + "\n": "SHA-256",
	} {
		p, err := parseThumbprint(in)
		if err != nil || p.hash != want {
			t.Errorf("%q: %v %v, want %s", in, p.hash, err, want)
		}
	}
}

func TestConnectFailures(t *testing.T) {
	s := newSim(t, simulator.ESX())
	ctx := context.Background()
	tokenDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "https://" + closed.Addr().String() + "/sdk"
	closed.Close()
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want error
		msg  string
	}{
		{"wrong password", func(o *Options) { o.HTTP.CredsDir = credsDir(t, simUser, "wrong") }, ErrUnauthorized, "InvalidLogin"},
		{"wrong user", func(o *Options) { o.HTTP.CredsDir = credsDir(t, "mallory", simPass) }, ErrUnauthorized, "InvalidLogin"},
		{"a token", func(o *Options) { o.HTTP.CredsDir = tokenDir }, ErrInvalidOptions, "bearer token"},
		{"no credentials", func(o *Options) { o.HTTP.CredsDir = "" }, ErrInvalidOptions, "no credentials"},
		{"http://", func(o *Options) { o.URL = strings.Replace(o.URL, "https://", "http://", 1) }, ErrInvalidOptions, "want https://"},
		{"credentials in the URL", func(o *Options) { o.URL = strings.Replace(o.URL, "https://", "https://u:p@", 1) }, ErrInvalidOptions, "credentials in the URL"},
		{"connection refused", func(o *Options) { o.URL = refused }, ErrTransient, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s.options()
			tc.edit(&o)
			_, err := Connect(ctx, o)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("%v: want %v, %q", err, tc.want, tc.msg)
			}
		})
	}
}

// A bare https://host is its SDK; Close logs out, so the session is gone.
func TestConnectBareHostAndLogout(t *testing.T) {
	s := newSim(t, simulator.ESX())
	o := s.options()
	o.URL = "https://" + s.address
	c, err := Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c.sdk.Path != "/sdk" {
		t.Fatalf("SDK at %s", c.sdk)
	}
	sel := Selector{InventoryPath: "/ha-datacenter/vm/ha-host_VM0"}
	if _, err := Resolve(context.Background(), c, sel); err != nil && !errors.Is(err, ErrInUse) {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// NotAuthenticated: the session ended, which a new attempt's login
	// mends (the credentials were taken).
	if _, err := Resolve(context.Background(), c, sel); !errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "session ended") {
		t.Fatalf("after Close: %v", err)
	}
}

// The session outlives the host's idle timeout while the client is open:
// a long datastore read talks to the SDK only at its start and end.
func TestTimedSessionKeepAlive(t *testing.T) {
	s := newSim(t, simulator.ESX())
	admin := s.connect(t)
	if err := sim25.SetSessionTimeout(context.Background(), admin.Vim, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { keepAliveIdle = d }(keepAliveIdle)
	keepAliveIdle = 50 * time.Millisecond
	c := s.connect(t)
	time.Sleep(time.Second)
	if _, err := Resolve(context.Background(), c, Selector{InventoryPath: "/ha-datacenter/vm/ha-host_VM0"}); err != nil && !errors.Is(err, ErrInUse) {
		t.Fatalf("after idling past the session timeout: %v", err)
	}
}
