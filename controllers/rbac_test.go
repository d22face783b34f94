package controllers

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The suite runs the manager as a user bound to config/rbac/role.yaml
// only (envtest's apiserver authorizes with RBAC), so every spec proves
// the role is enough; and it records each request the manager makes, so
// AfterSuite can prove every verb the role grants is one the code uses.

// managerRole reads the ClusterRole controller-gen wrote.
func managerRole() (*rbacv1.ClusterRole, error) {
	b, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(bytes.TrimPrefix(b, []byte("---\n")), role); err != nil {
		return nil, fmt.Errorf("config/rbac/role.yaml: %w", err)
	}
	return role, nil
}

// verbsNotRequested are granted but never show as a request of the
// manager in this suite, each for a reason other than disuse.
var verbsNotRequested = map[string]string{
	// Checked by the OwnerReferencesPermissionEnforcement admission
	// plugin (enabled in the suite) when a child is created with
	// blockOwnerDeletion: an authorization, not a request.
	"persistentvolumeclaims/finalizers:update":        "admission",
	"storage.vmdkpop.io/vmdkimages/finalizers:update": "admission",
	// The suite reads pod logs through a fake: there is no kubelet.
	"pods/log:get": "fake log reader",
	// Registered at start-up by main, only when the CRD exists.
	"populator.storage.k8s.io/volumepopulators:get":    "main only",
	"populator.storage.k8s.io/volumepopulators:create": "main only",
}

// requestLog records group/resource[/subresource]:verb of each request.
type requestLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

// wrap records in l what goes through next (a rest.Config's Wrap: each
// manager the suite starts makes its own transports).
func (l *requestLog) wrap(next http.RoundTripper) http.RoundTripper {
	return loggedTransport{l, next}
}

type loggedTransport struct {
	log  *requestLog
	next http.RoundTripper
}

func (t loggedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.log.record(req)
	return t.next.RoundTrip(req)
}

func (l *requestLog) record(req *http.Request) {
	if key, ok := requestKey(req); ok {
		l.mu.Lock()
		l.seen[key] = true
		if req.URL.Query().Get("sendInitialEvents") == "true" {
			// A watch-list: the informer's initial list, streamed. Against
			// servers without it, the same informer lists.
			l.seen[strings.TrimSuffix(key, ":watch")+":list"] = true
		}
		l.mu.Unlock()
	}
}

// requestKey names a request as an RBAC rule does; discovery and other
// non-resource requests have none.
func requestKey(req *http.Request) (string, bool) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		return "", false
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	resource, name := parts[0], ""
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		resource += "/" + parts[2]
	}
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch"}[req.Method]
	switch req.Method {
	case http.MethodGet:
		verb = "list"
		switch {
		case name != "":
			verb = "get"
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
			verb = "watch"
		}
	case http.MethodDelete:
		verb = "deletecollection"
		if name != "" {
			verb = "delete"
		}
	}
	if group != "" {
		resource = group + "/" + resource
	}
	return resource + ":" + verb, true
}

// unusedGrants lists what role grants that log never saw and that
// verbsNotRequested does not explain.
func unusedGrants(role *rbacv1.ClusterRole, log *requestLog) []string {
	log.mu.Lock()
	defer log.mu.Unlock()
	var out []string
	for _, rule := range role.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					key := res + ":" + v
					if g != "" {
						key = g + "/" + key
					}
					if !log.seen[key] && verbsNotRequested[key] == "" {
						out = append(out, key)
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
