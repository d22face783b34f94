package vsphere

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// How the SDK's certificate is trusted: vSphere hosts mostly serve a
// self-signed certificate (or one from VMCA, vCenter's own CA), so users
// pin it by the thumbprint vSphere shows them: SHA-1 in older clients and
// in the API (SSLVerifyFault.Thumbprint), SHA-256 in newer ones, written
// AA:BB:... or aabb... . govmomi's soap.Client.SetThumbprint knows both
// hashes but compares the text exactly (upper case, colons), and only
// after the normal verification failed; here a pin is decoded once and
// compared as bytes, and it alone decides. Without a pin the system roots
// and --ca-file's are trusted, with the host name checked.

// maxCAFile bounds --ca-file, as the HTTP source does.
const maxCAFile = 4 << 20

// pin is a decoded thumbprint.
type pin struct {
	sum  []byte
	hash string // "SHA-1" or "SHA-256"
}

// parseThumbprint decodes a SHA-1 or SHA-256 thumbprint: hex in any case,
// bytes separated by colons (each two digits) or not at all.
func parseThumbprint(s string) (pin, error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, ":") {
		parts := strings.Split(t, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return pin{}, tag(ErrInvalidOptions, "--vsphere-thumbprint %q: want hex bytes separated by colons (AB:CD:...) or none", s)
			}
		}
		t = strings.Join(parts, "")
	}
	sum, err := hex.DecodeString(t)
	if err != nil {
		return pin{}, tag(ErrInvalidOptions, "--vsphere-thumbprint %q: not hex", s)
	}
	switch len(sum) {
	case sha1.Size:
		return pin{sum, "SHA-1"}, nil
	case sha256.Size:
		return pin{sum, "SHA-256"}, nil
	}
	return pin{}, tag(ErrInvalidOptions, "--vsphere-thumbprint %q: %d bytes; want a SHA-1 (20 bytes) or SHA-256 (32 bytes) thumbprint", s, len(sum))
}

func (p pin) matches(cert *x509.Certificate) bool {
	if p.hash == "SHA-1" {
		s := sha1.Sum(cert.Raw)
		return bytes.Equal(p.sum, s[:])
	}
	s := sha256.Sum256(cert.Raw)
	return bytes.Equal(p.sum, s[:])
}

// tlsConfig is the trust of the SDK at host: the thumbprint when given,
// else the system roots and caFile's.
func tlsConfig(host, thumbprint, caFile string) (*tls.Config, error) {
	if thumbprint != "" {
		if caFile != "" {
			return nil, tag(ErrInvalidOptions, "--vsphere-thumbprint and --ca-file: give one (a pinned certificate needs no CA)")
		}
		p, err := parseThumbprint(thumbprint)
		if err != nil {
			return nil, err
		}
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The pin replaces the chain and host name checks, which a
			// self-signed host certificate fails: Go runs
			// VerifyConnection in their place on every handshake
			// (resumed ones too), and it refuses any certificate but
			// the pinned one. This is the only configuration that
			// turns the standard checks off, and never without it.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return untrusted(host, nil, errors.New("the server sent no certificate"))
				}
				if !p.matches(cs.PeerCertificates[0]) {
					return untrusted(host, cs.PeerCertificates, fmt.Errorf("its certificate does not match the %s thumbprint given", p.hash))
				}
				return nil
			},
		}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := readCAFile(caFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, tag(ErrInvalidOptions, "--ca-file %s: no PEM certificates in it", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func readCAFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, tag(ErrInvalidOptions, "--ca-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		return nil, tag(ErrInvalidOptions, "--ca-file %s: %w", name, err)
	}
	if len(b) > maxCAFile {
		return nil, tag(ErrInvalidOptions, "--ca-file %s: more than %d bytes", name, maxCAFile)
	}
	return b, nil
}

// UntrustedError is a server whose certificate is not trusted. It names
// the certificate's thumbprints, so the user can compare them with what
// vSphere shows and pin the right one. It unwraps to a
// *tls.CertificateVerificationError: no retry makes the certificate
// trusted.
type UntrustedError struct {
	Host         string
	SHA1, SHA256 string // of the server's certificate, AA:BB:... ("": none was sent)
	verification *tls.CertificateVerificationError
}

func untrusted(host string, certs []*x509.Certificate, why error) *UntrustedError {
	e := &UntrustedError{Host: host, verification: &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: why}}
	if len(certs) > 0 {
		s1 := sha1.Sum(certs[0].Raw)
		s256 := sha256.Sum256(certs[0].Raw)
		e.SHA1, e.SHA256 = colonHex(s1[:]), colonHex(s256[:])
	}
	return e
}

func (e *UntrustedError) Error() string {
	why := e.verification.Err
	if e.SHA1 == "" {
		return fmt.Sprintf("%s: the server's certificate is not trusted: %v", e.Host, why)
	}
	return fmt.Sprintf("%s: the server's certificate is not trusted: %v; its SHA-1 thumbprint is %s and its SHA-256 thumbprint is %s: if vSphere shows one of these for this host, give it as the thumbprint (or give the CA that signed it)", e.Host, why, e.SHA1, e.SHA256)
}

func (e *UntrustedError) Unwrap() error { return e.verification }

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	parts := make([]string, 0, len(b))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
