package vsphere

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// How an export's device URL is found in the lease, checked and fetched.

// diskURL picks the lease's URL of the disk. ESXi keys a device URL by
// the VM and the disk's place: "/vm-42/VirtualLsiLogicController0:1"
// (controller class, bus number, unit number); vcsim by the disk's order
// among the VM's file-backed disks: "/vm-42/disk:0".
func diskURL(info *types.HttpNfcLeaseInfo, s exportSpec) (types.HttpNfcLeaseDeviceUrl, error) {
	keys, err := deviceKeys(s)
	if err != nil {
		return types.HttpNfcLeaseDeviceUrl{}, err
	}
	var found []types.HttpNfcLeaseDeviceUrl
	var seen []string
	for _, d := range info.DeviceUrl {
		if len(seen) < 8 {
			seen = append(seen, d.Key)
		}
		if d.Disk != nil && !*d.Disk {
			continue
		}
		for _, k := range keys {
			if d.Key == k {
				found = append(found, d)
			}
		}
	}
	if len(found) != 1 {
		return types.HttpNfcLeaseDeviceUrl{}, fmt.Errorf("%w: the lease gives %d URLs for %s (key %s), among %d device URLs %q",
			ErrDeviceURL, len(found), what(s), strings.Join(keys, " or "), len(info.DeviceUrl), seen)
	}
	return found[0], nil
}

// deviceKeys are the keys a lease may give the disk's URL.
func deviceKeys(s exportSpec) ([]string, error) {
	disk, ok := s.Devices.FindByKey(s.DiskKey).(*types.VirtualDisk)
	if !ok {
		return nil, fmt.Errorf("%w: %s: no virtual disk with device key %d in the exported hardware", ErrDeviceURL, what(s), s.DiskKey)
	}
	n := 0
	for _, d := range s.Devices {
		if d == types.BaseVirtualDevice(disk) {
			break
		}
		if vd, ok := d.(*types.VirtualDisk); ok {
			if _, file := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo); file {
				n++
			}
		}
	}
	keys := []string{fmt.Sprintf("/%s/disk:%d", s.VM.Value, n)}
	if ctrl, ok := s.Devices.FindByKey(disk.ControllerKey).(types.BaseVirtualController); ok && disk.UnitNumber != nil {
		class := reflect.TypeOf(ctrl).Elem().Name()
		keys = append([]string{fmt.Sprintf("/%s/%s%d:%d", s.VM.Value, class, ctrl.GetVirtualController().BusNumber, *disk.UnitNumber)}, keys...)
	}
	return keys, nil
}

// deviceURL is the URL to GET: "*" is the SDK host (the lease's own
// rule, when the SDK is an ESXi host); https only; the SDK host, trusted
// as the SDK connection is, or another host (vCenter names the ESXi host
// that serves the disk) whose certificate matches the thumbprint the
// lease gives, which came over that trusted connection, or else the
// same CAs.
func deviceURL(sdk *url.URL, d types.HttpNfcLeaseDeviceUrl) (*url.URL, error) {
	u, err := url.Parse(d.Url)
	if err != nil {
		return nil, fmt.Errorf("%w: the lease's device URL does not parse: %v", ErrDeviceURL, err)
	}
	if u.Hostname() == "*" {
		u.Host = sdk.Host
	}
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return nil, fmt.Errorf("%w: %s is not https: a disk is not read in the clear", ErrDeviceURL, describe(u))
	case u.User != nil:
		return nil, fmt.Errorf("%w: %s carries credentials", ErrDeviceURL, describe(u))
	case u.Hostname() == "":
		return nil, fmt.Errorf("%w: %s names no host", ErrDeviceURL, describe(u))
	}
	return u, nil
}

func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return "443"
}

// describe names a device URL without its path's lease ticket: the host
// and the file.
func describe(u *url.URL) string {
	return u.Scheme + "://" + u.Host + "/.../" + path.Base(u.Path)
}

// get GETs the device URL. The SDK's host is trusted as the SDK is, and
// given the session's cookie (an ESXi host's NFC wants it); another host
// (vCenter names the ESXi host that serves the disk, with a ticket in the
// URL) by the thumbprint the lease gives it, which came over the trusted
// SDK connection, or else by the same roots and --ca-file. Redirects are
// refused: the lease names the host that serves the disk.
func get(ctx context.Context, c *Client, u *url.URL, thumbprint string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDeviceURL, describe(u), err)
	}
	cfg := c.TLS()
	if sameHost(u, c.sdk) {
		if ck := c.Vim.SessionCookie(); ck != nil {
			req.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: ck.Value})
		}
	} else {
		// No thumbprint from the lease: the roots, as without
		// --vsphere-thumbprint; a pin replaces them.
		ca := c.opts.HTTP.CAFile
		if thumbprint != "" {
			ca = ""
		}
		if cfg, err = tlsConfig(u.Hostname(), thumbprint, ca); err != nil {
			return nil, fmt.Errorf("%w: the lease's thumbprint for %s: %v", ErrDeviceURL, u.Host, err)
		}
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSClientConfig:       cfg,
			ResponseHeaderTimeout: loginTimeout,
			DisableKeepAlives:     true, // one request: nothing idle is left behind
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the whole URL, ticket and all
		}
		var cert *tls.CertificateVerificationError
		switch {
		case context.Cause(ctx) != nil:
			return nil, fmt.Errorf("GET %s: %w", describe(u), context.Cause(ctx))
		case errors.As(err, &cert):
			return nil, fmt.Errorf("%w: %s: %w", ErrDeviceURL, describe(u), err)
		}
		return nil, fmt.Errorf("%w: GET %s: %v", ErrLease, describe(u), err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s", ErrLease, describe(u), res.Status)
	}
	return res.Body, nil
}
