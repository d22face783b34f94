// Command ociimage writes a container image as a docker-archive tarball
// (what `docker save` writes and `docker load`, `ctr images import` and
// `kind load image-archive` read) from static binaries, without Docker or
// a registry. The image has one layer: the binaries in /, and /etc/passwd
// and /etc/group naming the non-root user it runs as.
//
//	go run ./hack/ociimage -o bin/vmdkpop.tar -t vmdkpop:dev -entrypoint /manager bin/manager bin/imager
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// uid and gid of the image's user: distroless's "nonroot".
const uid, gid = 65532, 65532

// epoch is every file's and the image's timestamp: the same binaries make
// the same tarball.
var epoch = time.Unix(0, 0).UTC()

type options struct {
	out, tag, entrypoint string
	binaries             []string
}

func main() {
	var o options
	flag.StringVar(&o.out, "o", "image.tar", "output tarball")
	flag.StringVar(&o.tag, "t", "vmdkpop:dev", "image name and tag")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "entrypoint (default: the first binary)")
	flag.Parse()
	o.binaries = flag.Args()
	if err := build(o); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func build(o options) error {
	if len(o.binaries) == 0 {
		return fmt.Errorf("no binaries given")
	}
	if !strings.Contains(o.tag, ":") {
		return fmt.Errorf("tag %q: want name:tag", o.tag)
	}
	if o.entrypoint == "" {
		o.entrypoint = "/" + filepath.Base(o.binaries[0])
	}
	layer, err := makeLayer(o.binaries)
	if err != nil {
		return err
	}
	diffID := digest(layer)
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": []string{o.entrypoint},
			"User":       fmt.Sprintf("%d:%d", uid, gid),
			"WorkingDir": "/",
			"Env":        []string{"PATH=/"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
		"history": []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "hack/ociimage"}},
	})
	if err != nil {
		return err
	}
	configName := digest(config) + ".json"
	layerName := diffID + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{o.tag}, "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}
	tmp := o.out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer}, {"manifest.json", manifest}} {
		if err := addFile(tw, e.name, e.data, 0o644, 0, 0); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, o.out)
}

// makeLayer builds the uncompressed layer tar.
func makeLayer(binaries []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
		return nil, err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", gid)
	if err := addFile(tw, "etc/passwd", []byte(passwd), 0o644, 0, 0); err != nil {
		return nil, err
	}
	if err := addFile(tw, "etc/group", []byte(group), 0o644, 0, 0); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, b := range binaries {
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, err
		}
		if !isStaticELF(data) {
			return nil, fmt.Errorf("%s: not a static ELF binary (build with CGO_ENABLED=0)", b)
		}
		name := filepath.Base(b)
		if seen[name] {
			return nil, fmt.Errorf("two binaries named %s", name)
		}
		seen[name] = true
		if err := addFile(tw, name, data, 0o755, 0, 0); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, name string, data []byte, mode int64, u, g int) error {
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), Uid: u, Gid: g, ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := io.Copy(tw, bytes.NewReader(data))
	return err
}

// isStaticELF reports an ELF file without a PT_INTERP program header (no
// dynamic loader needed: it runs in an image with no libc).
func isStaticELF(b []byte) bool {
	if len(b) < 64 || string(b[:4]) != "\x7fELF" || b[4] != 2 || b[5] != 1 {
		return false // only 64-bit little-endian
	}
	le := func(off, n int) uint64 {
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[off+i])
		}
		return v
	}
	phoff, phentsize, phnum := le(32, 8), le(54, 2), le(56, 2)
	for i := uint64(0); i < phnum; i++ {
		off := phoff + i*phentsize
		if off+4 > uint64(len(b)) {
			return false
		}
		if le(int(off), 4) == 3 { // PT_INTERP
			return false
		}
	}
	return true
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
