package vsphere

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/sim25"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// One keepalive call lost (a blip of the network or of the SDK) does not
// end the session: govmomi's own keepalive stops at its first failure,
// and the session then idled out under a long datastore read.
func TestTimedSessionKeepAliveBlip(t *testing.T) {
	s := newSim(t, simulator.ESX())
	admin := s.connect(t)
	if err := sim25.SetSessionTimeout(context.Background(), admin.Vim, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { keepAliveIdle = d }(keepAliveIdle)
	keepAliveIdle = 50 * time.Millisecond
	var failing atomic.Bool
	up, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	up.Path = ""
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "blip", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	o := s.options()
	o.URL, o.Thumbprint = srv.URL+"/sdk", hex.EncodeToString(sum[:])
	c, err := Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	failing.Store(true)
	time.Sleep(120 * time.Millisecond) // two keepalives or more fail
	failing.Store(false)
	time.Sleep(time.Second) // three session timeouts
	if _, err := Resolve(context.Background(), c, Selector{InventoryPath: "/ha-datacenter/vm/ha-host_VM0"}); err != nil && !errors.Is(err, ErrInUse) {
		t.Fatalf("after a 120 ms blip and a second: %v", err)
	}
}

// A session that ended during the read (here logged out; an outage
// longer than the host's idle timeout does the same) is no reason to
// throw the copy away: Recheck logs in again with the same credentials.
func TestRecheckLogsInAgain(t *testing.T) {
	v := newChainVM(t, vmdktest.ChainOptions{Seed: 48})
	ctx := context.Background()
	powerOff(t, v.vm)
	d, err := Resolve(ctx, v.c, Selector{MoRef: v.vm.Reference().Value})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.c.sess.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Recheck(ctx, v.c, d); err != nil {
		t.Fatalf("Recheck after the session ended: %v", err)
	}
}
