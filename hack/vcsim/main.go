// Command vcsim runs the simulated vCenter or ESXi host of package
// test/vcenter (govmomi's vcsim holding a powered-off and a running VM
// whose disks are real ESXi backing chains) until SIGTERM: the e2e suite
// runs it as a pod (image vmdkpop-e2e-fileserver) reached by the pod's IP.
//
// Once the inventory is built it prints the fixture's description as one
// JSON line on stdout (the SDK URL, the certificate's thumbprints, each
// VM's uuid, moref and inventory path, its disks' backing files and the
// sha256 of their content now and at each snapshot), then serves.
//
// --listen must be an address clients reach, the pod's IP in a pod: the
// URLs the server hands out (NFC lease device URLs) name that host.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmdkpop/vmdkpop/test/vcenter"
)

func main() {
	log.SetPrefix("vcsim: ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run starts the fixture, writes its description to out and serves
// until ctx ends.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("vcsim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8989", "host:port to serve on; the host is the one the server's URLs name")
	esx := fs.Bool("esx", false, "an ESXi host reached directly (ha-datacenter), not a vCenter")
	size := fs.Int64("size", 0, "the first disk's size in bytes (0: 8 MiB + 4 KiB)")
	deltas := fs.Int("deltas", 0, "snapshots of each VM, each leaving a delta (0: 2; -1: none)")
	vmfsSparse := fs.Bool("vmfs-sparse", false, "each disk's first delta is vmfsSparse (COWD), not seSparse")
	seed := fs.Uint64("seed", 1, "seed of every disk's content")
	creds := fs.String("credentials-dir", "", "directory with username and password files: the only credentials accepted (default user/pass)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := vcenter.Options{ESX: *esx, Size: *size, Deltas: *deltas, VMFSSparse: *vmfsSparse, Seed: *seed, Listen: *listen}
	if *creds != "" {
		var err error
		if o.Username, err = readSecret(*creds, "username"); err == nil {
			o.Password, err = readSecret(*creds, "password")
		}
		if err != nil {
			return err
		}
	}
	f, err := vcenter.Start(ctx, o)
	if err != nil {
		return err
	}
	defer f.Close()
	line, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("describing the fixture: %w", err)
	}
	if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
		return err
	}
	log.Printf("serving %s", f.URL)
	<-ctx.Done()
	log.Printf("stopping")
	return nil
}

func readSecret(dir, key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, key))
	if err != nil {
		return "", fmt.Errorf("--credentials-dir: %w", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("--credentials-dir: %s is empty", key)
	}
	return v, nil
}
