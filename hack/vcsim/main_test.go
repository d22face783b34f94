package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

// The JSON line describes what the server holds, the credentials come
// from --credentials-dir, and run returns when its context ends.
func TestRunDescribesAndServes(t *testing.T) {
	creds := t.TempDir()
	for name, v := range map[string]string{"username": "admin\n", "password": "e2e-secret"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	t.Cleanup(func() { // the fixture closed (its temporary files gone), even after a failure
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--esx", "--deltas", "1", "--seed", "9", "--credentials-dir", creds}, pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no description: %v", err)
	}
	go io.Copy(io.Discard, pr)
	var f vcenter.Fixture
	if err := json.Unmarshal(line, &f); err != nil {
		t.Fatalf("description %q: %v", line, err)
	}
	if f.Username != "admin" || f.Datacenter != "ha-datacenter" || len(f.VMs) != 2 || len(f.VMs[1].Snapshots) != 1 ||
		len(f.VMs[1].Snapshots[0].Disks) != 2 || len(f.VMs[1].Snapshots[0].Disks[0].SHA256) != 64 || f.ThumbprintSHA256 == "" {
		t.Fatalf("description %s", line)
	}
	// The server behind it asks for the credentials of --credentials-dir.
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for pass, want := range map[string]int{"e2e-secret": http.StatusOK, "pass": http.StatusUnauthorized} {
		q := url.Values{"dcPath": {f.Datacenter}, "dsName": {f.Datastore}}
		req, _ := http.NewRequest(http.MethodGet, "https://"+u.Host+"/folder/"+f.VMs[0].Dir+"/"+f.VMs[0].Name+".vmdk?"+q.Encode(), nil)
		req.SetBasicAuth("admin", pass)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("password %q: %s, want %d", pass, resp.Status, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}
