package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}

func TestBuildImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() { println(\"hi\") }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	out := filepath.Join(dir, "image.tar")
	if err := build(options{out: out, tag: "test:v1", binaries: []string{bin}}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	files := readTar(t, f)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || manifest[0].RepoTags[0] != "test:v1" {
		t.Fatalf("manifest %s: %v", files["manifest.json"], err)
	}
	var config struct {
		Config struct {
			Entrypoint []string
			User       string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[manifest[0].Config], &config); err != nil {
		t.Fatal(err)
	}
	layer := files[manifest[0].Layers[0]]
	sum := sha256.Sum256(layer)
	if config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatal("diff_id does not match the layer")
	}
	if config.Config.User != "65532:65532" || config.Config.Entrypoint[0] != "/hello" {
		t.Fatalf("config %+v", config.Config)
	}
	lf := readTar(t, bytes.NewReader(layer))
	want, _ := os.ReadFile(bin)
	if !bytes.Equal(lf["hello"], want) || !bytes.Contains(lf["etc/passwd"], []byte("nonroot:x:65532")) {
		t.Fatal("layer content")
	}
	// The same inputs give the same tarball.
	first, _ := os.ReadFile(out)
	build(options{out: out, tag: "test:v1", binaries: []string{bin}})
	if second, _ := os.ReadFile(out); !bytes.Equal(first, second) {
		t.Fatal("not reproducible")
	}
	// A dynamic binary is refused.
	if err := build(options{out: out, tag: "test:v1", binaries: []string{"/bin/ls"}}); err == nil {
		t.Fatal("accepted a dynamically linked binary")
	}
}
