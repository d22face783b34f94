// Command fileserver serves a directory over HTTP with Range support: the
// e2e suite and make demo run it as a pod (image vmdkpop-e2e-fileserver)
// to serve test disks to import Jobs, addressed by the pod's IP.
//
// With --esxi-chain it first writes a deterministic ESXi snapshot chain
// into --dir/vm/ (a thin vmfs base under seSparse deltas, by package
// vmdk/vmdktest as hack/esxichain writes it), and logs the sha256 of the
// content the chain reads as. With --datastore DC/DS it serves the directory the
// way an ESXi host's datastore file API does (package test/datastore:
// /folder/<path>?dcPath=DC&dsName=DS, basic auth opening a session cookie
// when --credentials-dir holds username and password files).
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmdkpop/vmdkpop/test/datastore"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

func main() {
	dir := flag.String("dir", "/data", "directory to serve")
	addr := flag.String("addr", ":8080", "listen address")
	chain := flag.Int64("esxi-chain", 0, "first write an ESXi chain of this many bytes into --dir/vm/ (vm.vmdk, vm-flat.vmdk, vm-000001.vmdk, ...)")
	deltas := flag.Int("deltas", 1, "seSparse snapshot deltas of --esxi-chain")
	seed := flag.Uint64("seed", 1, "seed of --esxi-chain's content")
	ds := flag.String("datastore", "", "serve as an ESXi datastore DC/DS: /folder/<path>?dcPath=DC&dsName=DS")
	creds := flag.String("credentials-dir", "", "with --datastore: directory with username and password files required by basic auth")
	throttle := flag.Int64("throttle", 0, "with --datastore: bytes per second per reply (ESXi throttles each connection)")
	flag.Parse()
	if *chain > 0 {
		if err := os.MkdirAll(filepath.Join(*dir, "vm"), 0o755); err != nil {
			log.Fatal(err)
		}
		c, err := vmdktest.WriteESXiChain(filepath.Join(*dir, "vm"), "vm", *chain, vmdktest.ChainOptions{Deltas: *deltas, Seed: *seed})
		if err != nil {
			log.Fatalf("writing the chain: %v", err)
		}
		sum := sha256.New()
		if _, err := c.Model.WriteTo(sum); err != nil {
			log.Fatalf("the chain's content: %v", err)
		}
		log.Printf("wrote %s: its content's sha256 is %x", filepath.Base(c.Top), sum.Sum(nil))
	}
	var h http.Handler = http.FileServer(http.Dir(*dir))
	if *ds != "" {
		dc, name, ok := strings.Cut(*ds, "/")
		if !ok || dc == "" || name == "" {
			log.Fatalf("--datastore %q: want DC/DS", *ds)
		}
		s := &datastore.Server{Dir: *dir, DCPath: dc, DSName: name, Throttle: *throttle}
		if *creds != "" {
			var err error
			if s.User, err = readSecret(*creds, "username"); err == nil {
				s.Password, err = readSecret(*creds, "password")
			}
			if err != nil {
				log.Fatal(err)
			}
		}
		h = s
	}
	log.Printf("serving %s on %s", *dir, *addr)
	log.Fatal(http.ListenAndServe(*addr, h))
}

func readSecret(dir, key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, key))
	if err != nil {
		return "", fmt.Errorf("--credentials-dir: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
