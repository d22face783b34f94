// Command fileserver serves a directory over HTTP with Range support: the
// e2e suite runs it as a pod (image vmdkpop-e2e-fileserver) to serve test
// disks from a ConfigMap to import Jobs, addressed by the pod's IP.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	dir := flag.String("dir", "/data", "directory to serve")
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	log.Printf("serving %s on %s", *dir, *addr)
	log.Fatal(http.ListenAndServe(*addr, http.FileServer(http.Dir(*dir))))
}
