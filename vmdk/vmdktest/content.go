package vmdktest

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
)

// contentBlock is the unit MixedContent varies its kind by.
const contentBlock = 64 << 10

// MixedContent returns size bytes of deterministic content that looks like
// a used disk: 64 KiB blocks of zeros, of text, and of random bytes, in a
// pattern fixed by seed. It is computed as it is read (nothing is held),
// so it can stand for a disk of any size.
func MixedContent(seed uint64, size int64) io.ReaderAt {
	return &mixed{seed: seed, size: size}
}

type mixed struct {
	seed uint64
	size int64
}

func (m *mixed) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vmdktest: content read at negative offset %d", off)
	}
	if off >= m.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), m.size-off))
	block := make([]byte, contentBlock)
	for done := 0; done < n; {
		pos := off + int64(done)
		b := pos / contentBlock
		m.fill(block, b)
		done += copy(p[done:n], block[pos%contentBlock:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill writes block b's content into p (len contentBlock).
func (m *mixed) fill(p []byte, b int64) {
	r := rand.New(rand.NewPCG(m.seed, uint64(b)))
	switch r.IntN(4) {
	case 0:
		clear(p)
	case 1:
		text := fmt.Appendf(nil, "vmdktest seed %d block %d: the quick brown fox jumps over the lazy dog\n", m.seed, b)
		for i := 0; i < len(p); i += copy(p[i:], text) {
		}
	default:
		for i := 0; i+8 <= len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], r.Uint64())
		}
	}
}
