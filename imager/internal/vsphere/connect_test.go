package vsphere

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
)

// A --vsphere-url that is a web server's but not its SDK's (a typo'd
// path, the vSphere Client's page) is refused for good, saying so; a
// server that may heal (a proxy's 5xx, 429) is retried.
func TestConnectNotSDK(t *testing.T) {
	page := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}
	}
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
		want error
	}{
		{"404", http.NotFound, ErrInvalidOptions},
		{"401 of a proxy", page(http.StatusUnauthorized, "no"), ErrInvalidOptions},
		{"an HTML page", page(http.StatusOK, "<html>vSphere Client</html>"), ErrInvalidOptions},
		{"JSON", page(http.StatusOK, `{"error": "no"}`), ErrInvalidOptions},
		{"503", page(http.StatusServiceUnavailable, "<html>down</html>"), ErrTransient},
		{"429", page(http.StatusTooManyRequests, "slow down"), ErrTransient},
		{"an HTML 500", page(http.StatusInternalServerError, "<html>oops</html>"), ErrTransient},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(c.h)
			defer srv.Close()
			sum := sha256.Sum256(srv.Certificate().Raw)
			_, err := Connect(context.Background(), Options{URL: srv.URL + "/sdkx", Thumbprint: hex.EncodeToString(sum[:]),
				HTTP: source.HTTPOptions{CredsDir: credsDir(t, "u", "p")}})
			msg := "not a vSphere SDK endpoint (want https://host/sdk)"
			if c.want == ErrTransient {
				msg = srv.Listener.Addr().String()
			}
			wantErr(t, c.name, err, c.want, msg)
		})
	}
}
