package source

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"path"
	"strings"
)

// An OVA's manifest (DSP0243 5.1): one line per file of the package,
// "SHA256(vm.ovf)= <hex>" (SHA1 and SHA512 too), each chunk of a chunked
// file named as its member.

// maxManifest bounds the manifest read into memory: a line per member,
// and a VM has at most a few hundred disks.
const maxManifest = 1 << 20

// manifestAlgorithms are the digests a manifest line may name.
var manifestAlgorithms = map[string]func() hash.Hash{
	"SHA1":   sha1.New,
	"SHA256": sha256.New,
	"SHA512": sha512.New,
}

type manifestEntry struct {
	alg string
	sum []byte
}

// parseManifest reads a manifest's lines; anything else in it (a line
// that is not ALG(name)= hex, an unknown algorithm, a digest of the wrong
// length, a name twice) makes it damaged.
func parseManifest(b []byte) (map[string]manifestEntry, error) {
	m := map[string]manifestEntry{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		bad := func(why string) error {
			if len(line) > 80 {
				line = line[:77] + "..."
			}
			return damaged(fmt.Errorf("OVA: manifest line %d %q: %s", i+1, line, why))
		}
		alg, rest, ok := strings.Cut(line, "(")
		if !ok {
			return nil, bad("want ALGORITHM(file)= digest")
		}
		newHash, ok := manifestAlgorithms[strings.ToUpper(alg)]
		if !ok {
			return nil, bad("the algorithm is not SHA1, SHA256 or SHA512")
		}
		i := strings.LastIndex(rest, ")=")
		if i < 0 {
			return nil, bad("want ALGORITHM(file)= digest")
		}
		name, digest := rest[:i], strings.TrimSpace(rest[i+2:])
		sum, err := hex.DecodeString(digest)
		if err != nil || len(sum) != newHash().Size() {
			return nil, bad(fmt.Sprintf("the digest is not %d hex digits", 2*newHash().Size()))
		}
		if !validMember(name) {
			return nil, bad("the file name is not a plain member name")
		}
		name = path.Clean(name)
		if _, dup := m[name]; dup {
			return nil, bad("the file is listed twice")
		}
		m[name] = manifestEntry{alg: strings.ToUpper(alg), sum: sum}
	}
	if len(m) == 0 {
		return nil, damaged(errors.New("OVA: the manifest lists no files"))
	}
	return m, nil
}

// memberHash hashes a member as it is read: with the algorithm its
// manifest line names, or, before the manifest has come, with each
// algorithm one may name (SHA-512, the slowest, on another core while
// SHA-1 and SHA-256 run here, so the three cost about what SHA-512 alone
// does).
type memberHash struct {
	name string
	hs   map[string]hash.Hash
}

func newMemberHash(name string, algs ...string) *memberHash {
	h := &memberHash{name: name, hs: map[string]hash.Hash{}}
	for _, alg := range algs {
		h.hs[alg] = manifestAlgorithms[alg]()
	}
	return h
}

// parallelHash is the least a write hashes on another core: below it,
// starting a goroutine costs more than it saves.
const parallelHash = 16 << 10

func (h *memberHash) Write(p []byte) (int, error) {
	side, ok := h.hs["SHA512"]
	if len(h.hs) == 1 || !ok || len(p) < parallelHash {
		for _, hh := range h.hs {
			hh.Write(p)
		}
		return len(p), nil
	}
	done := make(chan struct{})
	go func() {
		side.Write(p)
		close(done)
	}()
	for alg, hh := range h.hs {
		if alg != "SHA512" {
			hh.Write(p)
		}
	}
	<-done
	return len(p), nil
}

// sums are the member's digests by algorithm.
func (h *memberHash) sums() map[string][]byte {
	s := map[string][]byte{}
	for alg, hh := range h.hs {
		s[alg] = hh.Sum(nil)
	}
	return s
}

// verify checks a member's digests against its manifest line.
func verifyAgainst(m map[string]manifestEntry, name string, sums map[string][]byte) error {
	e, ok := m[name]
	if !ok {
		return tag(ErrChecksum, fmt.Errorf("OVA: the manifest does not list %q, so it cannot be verified", name))
	}
	got, ok := sums[e.alg]
	if !ok {
		return fmt.Errorf("internal error: %q was not hashed with %s", name, e.alg)
	}
	if !bytes.Equal(got, e.sum) {
		return tag(ErrChecksum, fmt.Errorf("OVA: %q has %s %x, not the manifest's %x: the package is damaged or was altered", name, e.alg, got, e.sum))
	}
	return nil
}
