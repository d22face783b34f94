package vcenter

import (
	"context"
	"crypto/subtle"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// folderAuth stands in front of vcsim's /folder handler with what ESXi
// does and vcsim does not: credentials, and the locks of running VMs.
type folderAuth struct {
	svc            *simulator.Service
	user, password string
	// admin is the fixture's own SDK session, set once the server runs:
	// it reads the session list a cookie is checked against.
	admin atomic.Pointer[vim25.Client]

	mu sync.Mutex
	// tops are the files each VM writes while it runs ("<dir>/<file>",
	// its disks' top links): locked while that VM is powered on, as it is
	// now, so a VM powered on mid-read locks them mid-read.
	tops map[string]types.ManagedObjectReference

	requests atomic.Int64
}

// folderMethods are the methods given to folderAuth. Go's ServeMux
// prefers a pattern with a method over vcsim's own "/folder/", so these
// reach folderAuth first; vcsim's handler serves the rest (none a client
// sends).
var folderMethods = []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete}

func newFolderAuth(svc *simulator.Service, user, password string) *folderAuth {
	a := &folderAuth{svc: svc, user: user, password: password, tops: map[string]types.ManagedObjectReference{}}
	if svc.ServeMux == nil {
		svc.ServeMux = http.NewServeMux() // what NewServer would make
	}
	for _, m := range folderMethods {
		svc.Handle(m+" /folder/", a) // GET covers HEAD
	}
	return a
}

func (a *folderAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		// ESXi asks for basic auth on /folder.
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
		return
	}
	name := path.Clean(strings.TrimPrefix(r.URL.Path, "/folder/"))
	if a.isLocked(r.Context(), name) {
		// hostd cannot open a file the VMX holds ("Failed to lock the
		// file"); over /folder that is 403.
		http.Error(w, "403 Forbidden: the file is locked by a running virtual machine", http.StatusForbidden)
		return
	}
	a.requests.Add(1)
	a.svc.ServeDatastore(w, r)
}

func (a *folderAuth) authorized(r *http.Request) bool {
	if u, p, ok := r.BasicAuth(); ok {
		return subtle.ConstantTimeCompare([]byte(u), []byte(a.user)) == 1 &&
			subtle.ConstantTimeCompare([]byte(p), []byte(a.password)) == 1
	}
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil || c.Value == "" {
		return false
	}
	return a.sessionActive(r.Context(), c.Value)
}

// sessionActive says whether key is a live SDK session: one in the
// session manager's list now (asked at each request, so a session logged
// out, or expired, loses its /folder access at once, as on ESXi).
func (a *folderAuth) sessionActive(ctx context.Context, key string) bool {
	c := a.admin.Load()
	if c == nil {
		return false
	}
	var sm mo.SessionManager
	if err := property.DefaultCollector(c).RetrieveOne(ctx, *c.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		return false
	}
	for _, s := range sm.SessionList {
		if s.Key == key {
			return true
		}
	}
	return false
}

func (a *folderAuth) holds(name string, vm types.ManagedObjectReference) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tops[path.Clean(name)] = vm
}

// isLocked: name is a top link of a VM that is powered on now (the
// power state read at each request: a power-on mid-read locks the rest of
// the read). A state it cannot read counts as locked.
func (a *folderAuth) isLocked(ctx context.Context, name string) bool {
	a.mu.Lock()
	vm, ok := a.tops[name]
	a.mu.Unlock()
	if !ok {
		return false
	}
	c := a.admin.Load()
	if c == nil {
		return true
	}
	var m mo.VirtualMachine
	if err := property.DefaultCollector(c).RetrieveOne(ctx, vm, []string{"runtime.powerState"}, &m); err != nil {
		return true
	}
	return m.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
}
