package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// A whole-buffer inflater (RFC 1951 deflate inside an optional RFC 1950
// zlib wrapper) for compressed grains. A grain's compressed bytes are all
// in memory and its content has a known length, so the decoder reads the
// input as a slice (64-bit loads, no io.ByteReader call per byte) and
// writes straight into the caller's buffer, which is its own window: no
// 32 KiB history ring copied out on every read as a streaming decoder
// needs. klauspost/compress's streaming flate decoder inflated this
// project's benchmark grains at about 250 MB/s on one core, zlib at about
// 370 MB/s; the grain read paths are bound by inflate.
//
// It accepts and refuses what compress/flate does (complete Huffman codes,
// or an empty one, or a single code of one bit; at most 286 literal/length
// and 30 distance codes; a distance within what was written): FuzzInflate
// holds it to klauspost's decoder on mutated streams.

const (
	litRootBits  = 10
	distRootBits = 8
	clenRootBits = 7
	maxCodeBits  = 15

	// Table sizes: the root table and room for every subtable a complete
	// code can need. A subtable of s bits holds at least s+1 codes, so
	// 288 literal/length codes fill at most 48 subtables of 32 entries,
	// 30 distance codes at most 4 of 128.
	litTableLen  = 1<<litRootBits + 48*32
	distTableLen = 1<<distRootBits + 4*128
)

// A table entry: bits 0-4 the code bits to consume (the root bits, for a
// link to a subtable), bits 5-7 the kind, bits 8-11 the extra bits that
// follow (a subtable's index bits, for a link), bits 16-31 the value (a
// literal, a length or distance base, a subtable's start). An entry of
// kind 0 is a bit pattern no symbol (or no valid symbol) has.
const (
	kindLiteral = 1 << 5 // a literal byte; in the code-length code, a symbol
	kindBase    = 2 << 5 // a length or distance: base + extra bits
	kindEnd     = 3 << 5 // end of block
	kindLink    = 4 << 5 // a subtable
	kindMask    = 7 << 5
)

var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	clenOrder   = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

// Which alphabet a table decodes.
const (
	alphaLit = iota
	alphaDist
	alphaCodeLen
)

func entryOf(alpha int, sym int) uint32 {
	switch alpha {
	case alphaLit:
		switch {
		case sym < 256:
			return kindLiteral | uint32(sym)<<16
		case sym == 256:
			return kindEnd
		case sym < 286:
			i := sym - 257
			return kindBase | uint32(lengthExtra[i])<<8 | uint32(lengthBase[i])<<16
		}
	case alphaDist:
		if sym < 30 {
			return kindBase | uint32(distExtra[sym])<<8 | uint32(distBase[sym])<<16
		}
	case alphaCodeLen:
		return kindLiteral | uint32(sym)<<16
	}
	return 0 // 286, 287 (fixed code), distances 30, 31: invalid
}

// errInflate marks a stream that is not valid deflate.
var errInflate = errors.New("invalid deflate stream")

// inflater holds the decoding tables of one stream; pooled, so inflating
// a grain allocates nothing.
type inflater struct {
	lit    [litTableLen]uint32
	dist   [distTableLen]uint32
	clen   [1 << clenRootBits]uint32
	lens   [286 + 30]uint8
	sorted [288]uint16
}

var (
	inflaters sync.Pool
	fixedOnce sync.Once
	fixed     *inflater // the fixed Huffman codes' tables
)

func fixedTables() *inflater {
	fixedOnce.Do(func() {
		f := new(inflater)
		var lens [288]uint8
		for i := range lens {
			switch {
			case i < 144:
				lens[i] = 8
			case i < 256:
				lens[i] = 9
			case i < 280:
				lens[i] = 7
			default:
				lens[i] = 8
			}
		}
		var dlens [32]uint8
		for i := range dlens {
			dlens[i] = 5
		}
		if !f.build(f.lit[:], litRootBits, lens[:], alphaLit) || !f.build(f.dist[:], distRootBits, dlens[:], alphaDist) {
			panic("vmdk: fixed Huffman tables") // constant input: cannot happen
		}
		fixed = f
	})
	return fixed
}

// build fills t, a root table of root bits followed by room for
// subtables, with the canonical Huffman code of lens (RFC 1951 3.2.2).
// It reports false for an over-subscribed or incomplete code; an empty
// code (every pattern invalid) and a single one-bit code are accepted,
// as zlib and compress/flate accept them.
func (f *inflater) build(t []uint32, root int, lens []uint8, alpha int) bool {
	var count [maxCodeBits + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	longest := 0
	for l := maxCodeBits; l > 0; l-- {
		if count[l] != 0 {
			longest = l
			break
		}
	}
	clear(t[:1<<root])
	if longest == 0 {
		return true
	}
	left := 1
	for l := 1; l <= maxCodeBits; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return false // over-subscribed
		}
	}
	if left > 0 && longest != 1 {
		return false // incomplete
	}
	// Symbols in canonical order: by length, then by value.
	var offs [maxCodeBits + 2]int
	for l := 1; l <= maxCodeBits; l++ {
		offs[l+1] = offs[l] + count[l]
	}
	for s, l := range lens {
		if l != 0 {
			f.sorted[offs[l]] = uint16(s)
			offs[l]++
		}
	}
	remaining := count
	code, n := 0, 0
	next := 1 << root // where the next subtable goes
	linked, subStart, subBits := -1, 0, 0
	for l := 1; l <= longest; l++ {
		for range count[l] {
			e := entryOf(alpha, int(f.sorted[n]))
			n++
			// Deflate sends codes most significant bit first; the
			// decoder indexes by the bits in the order they arrive.
			rev := int(bits.Reverse16(uint16(code)) >> (16 - l))
			if l <= root {
				e |= uint32(l)
				for i := rev; i < 1<<root; i += 1 << l {
					t[i] = e
				}
			} else {
				if prefix := rev & (1<<root - 1); prefix != linked {
					// A subtable wide enough for the codes under this
					// prefix: grow while the remaining codes would not
					// fill it.
					sb := l - root
					room := 1 << sb
					for sb+root < longest {
						room -= remaining[sb+root]
						if room <= 0 {
							break
						}
						sb++
						room <<= 1
					}
					if next+1<<sb > len(t) {
						return false // cannot happen for a complete code (see litTableLen)
					}
					t[prefix] = kindLink | uint32(root) | uint32(sb)<<8 | uint32(next)<<16
					linked, subStart, subBits = prefix, next, sb
					next += 1 << sb
				}
				e |= uint32(l - root)
				for i := rev >> root; i < 1<<subBits; i += 1 << (l - root) {
					t[subStart+i] = e
				}
			}
			remaining[l]--
			code++
		}
		code <<= 1
	}
	return true
}

// bitReader reads a deflate stream's bits, least significant first, from
// a slice. Past the slice's end it reads zero bytes and counts them, so
// the hot loop needs no end check: a stream that used them is truncated.
type bitReader struct {
	src  []byte
	in   int    // next byte of src to load
	over int    // zero bytes read past the end of src
	bits uint64 // bits [0, n) are the stream's next bits
	n    uint
}

// refill makes at least 56 bits available.
func (b *bitReader) refill() {
	if b.in+8 <= len(b.src) {
		// Bits above n hold the next bytes of src already; loading them
		// again at their place leaves them unchanged.
		b.bits |= binary.LittleEndian.Uint64(b.src[b.in:]) << b.n
		b.in += int(63-b.n) >> 3
		b.n |= 56
		return
	}
	for b.n <= 56 {
		var c byte
		if b.in < len(b.src) {
			c = b.src[b.in]
			b.in++
		} else {
			b.over++
		}
		b.bits |= uint64(c) << b.n
		b.n += 8
	}
}

func (b *bitReader) take(k uint) uint64 {
	v := b.bits & (1<<k - 1)
	b.bits >>= k
	b.n -= k
	return v
}

// pastEnd reports whether the bits consumed go beyond src.
func (b *bitReader) pastEnd() bool {
	return 8*(b.in+b.over)-int(b.n) > 8*len(b.src)
}

// consumed is the bytes of src consumed (after a byte alignment).
func (b *bitReader) consumed() int { return b.in + b.over - int(b.n>>3) }

// inflateRaw decodes the deflate stream at the start of src into dst,
// which it must fill exactly, and returns the bytes of src the stream
// took.
func inflateRaw(dst, src []byte) (int, error) {
	f, _ := inflaters.Get().(*inflater)
	if f == nil {
		f = new(inflater)
	}
	defer inflaters.Put(f)
	b := bitReader{src: src}
	out := 0
	for {
		b.refill()
		if b.pastEnd() {
			return 0, fmt.Errorf("%w: truncated", errInflate)
		}
		final := b.take(1) == 1
		var lit, dist []uint32
		switch b.take(2) {
		case 0:
			var err error
			if out, err = storedBlock(&b, dst, out); err != nil {
				return 0, err
			}
		case 1:
			fx := fixedTables()
			lit, dist = fx.lit[:], fx.dist[:]
		case 2:
			if err := f.readCodes(&b); err != nil {
				return 0, err
			}
			lit, dist = f.lit[:], f.dist[:]
		default:
			return 0, fmt.Errorf("%w: block type 3", errInflate)
		}
		if lit != nil {
			var err error
			if out, err = huffmanBlock(&b, dst, out, (*[litTableLen]uint32)(lit), (*[distTableLen]uint32)(dist)); err != nil {
				return 0, err
			}
		}
		if final {
			break
		}
	}
	b.take(b.n & 7) // to a byte boundary
	if b.pastEnd() {
		return 0, fmt.Errorf("%w: truncated", errInflate)
	}
	if out != len(dst) {
		return 0, fmt.Errorf("inflated to %d bytes, want %d", out, len(dst))
	}
	return b.consumed(), nil
}

// storedBlock copies a stored block's bytes to dst[out:].
func storedBlock(b *bitReader, dst []byte, out int) (int, error) {
	b.take(b.n & 7)
	if b.n < 32 {
		b.refill()
	}
	size, check := int(b.take(16)), int(b.take(16))
	if size != ^check&0xffff {
		return 0, fmt.Errorf("%w: stored block length %#x, its complement %#x", errInflate, size, check)
	}
	// Go back to whole bytes of src: what is left in the bit buffer.
	at := b.consumed()
	if at+size > len(b.src) || b.pastEnd() {
		return 0, fmt.Errorf("%w: truncated in a stored block", errInflate)
	}
	if size > len(dst)-out {
		return 0, fmt.Errorf("inflates to more than %d bytes", len(dst))
	}
	copy(dst[out:], b.src[at:at+size])
	*b = bitReader{src: b.src, in: at + size}
	return out + size, nil
}

// readCodes reads a dynamic block's code lengths and builds its tables.
func (f *inflater) readCodes(b *bitReader) error {
	if b.n < 14 {
		b.refill()
	}
	nlit, ndist, nclen := int(b.take(5))+257, int(b.take(5))+1, int(b.take(4))+4
	if nlit > 286 || ndist > 30 {
		return fmt.Errorf("%w: %d literal/length and %d distance codes", errInflate, nlit, ndist)
	}
	var clens [19]uint8
	for i := range nclen {
		if b.n < 3 {
			b.refill()
		}
		clens[clenOrder[i]] = uint8(b.take(3))
	}
	if !f.build(f.clen[:], clenRootBits, clens[:], alphaCodeLen) {
		return fmt.Errorf("%w: bad code-length code", errInflate)
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		if b.n < 14 {
			b.refill()
			if b.pastEnd() {
				return fmt.Errorf("%w: truncated in the code lengths", errInflate)
			}
		}
		e := f.clen[b.bits&(1<<clenRootBits-1)]
		if e&kindMask == 0 {
			return fmt.Errorf("%w: bad code length code", errInflate)
		}
		b.take(uint(e & 31))
		sym := int(e >> 16)
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return fmt.Errorf("%w: code length repeat with no previous length", errInflate)
			}
			rep, val = 3+int(b.take(2)), lens[i-1]
		case 17:
			rep = 3 + int(b.take(3))
		default:
			rep = 11 + int(b.take(7))
		}
		if i+rep > len(lens) {
			return fmt.Errorf("%w: code lengths repeat past their end", errInflate)
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return fmt.Errorf("%w: no end-of-block code", errInflate)
	}
	if !f.build(f.lit[:], litRootBits, lens[:nlit], alphaLit) || !f.build(f.dist[:], distRootBits, lens[nlit:], alphaDist) {
		return fmt.Errorf("%w: bad Huffman code", errInflate)
	}
	return nil
}

// huffmanBlock decodes one Huffman-coded block into dst[out:]. The bit
// reader lives in locals here (registers, not memory): this loop is where
// a grain's inflate spends its time.
func huffmanBlock(b *bitReader, dst []byte, out int, lit *[litTableLen]uint32, dist *[distTableLen]uint32) (int, error) {
	src, in, bitbuf, n := b.src, b.in, b.bits, b.n
	defer func() { b.in, b.bits, b.n = in, bitbuf, n }()
	for {
		// 56 bits cover the longest symbol: a 15-bit length code, 5
		// extra bits, a 15-bit distance code and 13 extra bits.
		if in+8 <= len(src) {
			bitbuf |= binary.LittleEndian.Uint64(src[in:]) << n
			in += int(63-n) >> 3
			n |= 56
		} else {
			b.in, b.bits, b.n = in, bitbuf, n
			b.refill()
			in, bitbuf, n = b.in, b.bits, b.n
		}
		e := lit[bitbuf&(1<<litRootBits-1)]
		if e&kindMask == kindLink {
			bitbuf >>= litRootBits
			n -= litRootBits
			e = lit[int(e>>16)+int(bitbuf&(1<<(e>>8&15)-1))]
		}
		bitbuf >>= e & 31
		n -= uint(e & 31)
		if e&kindMask == kindLiteral {
			if out >= len(dst) {
				return 0, fmt.Errorf("inflates to more than %d bytes", len(dst))
			}
			dst[out] = byte(e >> 16)
			out++
			// A second literal from the same refill when its code fits.
			if n < maxCodeBits {
				continue
			}
			e = lit[bitbuf&(1<<litRootBits-1)]
			if e&kindMask != kindLiteral {
				continue
			}
			bitbuf >>= e & 31
			n -= uint(e & 31)
			if out >= len(dst) {
				return 0, fmt.Errorf("inflates to more than %d bytes", len(dst))
			}
			dst[out] = byte(e >> 16)
			out++
			continue
		}
		if e&kindMask != kindBase {
			b.in, b.bits, b.n = in, bitbuf, n
			if b.pastEnd() {
				return 0, fmt.Errorf("%w: truncated", errInflate)
			}
			if e&kindMask == kindEnd {
				return out, nil
			}
			return 0, fmt.Errorf("%w: bad literal/length code", errInflate)
		}
		extra := e >> 8 & 15
		length := int(e>>16) + int(bitbuf&(1<<extra-1))
		bitbuf >>= extra
		n -= uint(extra)
		e = dist[bitbuf&(1<<distRootBits-1)]
		if e&kindMask == kindLink {
			bitbuf >>= distRootBits
			n -= distRootBits
			e = dist[int(e>>16)+int(bitbuf&(1<<(e>>8&15)-1))]
		}
		bitbuf >>= e & 31
		n -= uint(e & 31)
		extra = e >> 8 & 15
		d := int(e>>16) + int(bitbuf&(1<<extra-1))
		bitbuf >>= extra
		n -= uint(extra)
		if e&kindMask != kindBase || d > out {
			b.in, b.bits, b.n = in, bitbuf, n
			if b.pastEnd() {
				return 0, fmt.Errorf("%w: truncated", errInflate)
			}
			if e&kindMask != kindBase {
				return 0, fmt.Errorf("%w: bad distance code", errInflate)
			}
			return 0, fmt.Errorf("%w: distance %d before the start", errInflate, d)
		}
		if length > len(dst)-out {
			return 0, fmt.Errorf("inflates to more than %d bytes", len(dst))
		}
		from := out - d
		switch {
		case d >= 8 && out+length+8 <= len(dst):
			// Words of 8 bytes, each read before it is overwritten
			// (d >= 8); the last may write past the match, into
			// dst's bytes still to come, which later symbols rewrite.
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(dst[out+i:], binary.LittleEndian.Uint64(dst[from+i:]))
			}
		case d >= length:
			copy(dst[out:out+length], dst[from:from+length])
		default:
			// Overlapping: the copy repeats the last d bytes.
			for i := range length {
				dst[out+i] = dst[from+i]
			}
		}
		out += length
	}
}

// inflateZlib decodes a zlib stream (RFC 1950) into dst, which it must
// fill exactly, verifying the Adler-32 of what it inflated.
func inflateZlib(dst, src []byte) error {
	if src[1]&0x20 != 0 {
		return fmt.Errorf("%w: zlib stream needs a preset dictionary", errInflate)
	}
	n, err := inflateRaw(dst, src[2:])
	if err != nil {
		return err
	}
	if n > len(src)-2 {
		return fmt.Errorf("vmdk: internal error: inflate consumed %d of %d bytes", n, len(src)-2)
	}
	tail := src[2+n:]
	if len(tail) < 4 {
		return fmt.Errorf("%w: truncated before its checksum", errInflate)
	}
	if want, got := binary.BigEndian.Uint32(tail), adler32(dst); want != got {
		return fmt.Errorf("zlib: invalid checksum: %08x, want %08x", got, want)
	}
	return nil
}

// adler32 is RFC 1950's checksum of p. hash/adler32 adds a byte at a
// time (s1 += b; s2 += s1: a chain of dependent adds); this takes 128
// bytes at a time in 16-bit lanes of 64-bit words, each lane summing one
// byte position of the words (and, for s2, the running sums before each
// word), and folds the lanes into s1 and s2 once a block: for a block of
// N bytes b_t, s2 gains N*s1 + sum((N-t) * b_t).
func adler32(p []byte) uint32 {
	const mod = 65521
	const bytes = 0x00ff00ff00ff00ff
	s1, s2 := uint64(1), uint64(0)
	blocks := 0
	for len(p) >= 128 {
		// Lanes stay below 2^16: e, o at most 16*255, pe, po at most
		// 255*(0+1+...+15).
		var e, o, pe, po uint64
		for i := 0; i < 128; i += 8 {
			x := binary.LittleEndian.Uint64(p[i:])
			pe += e
			po += o
			e += x & bytes
			o += x >> 8 & bytes
		}
		p = p[128:]
		// Byte j of word k is t = 8k+j: N-t = 8(15-k) + (8-j).
		s2 += 128*s1 + 8*(laneSum(pe)+laneSum(po)) +
			8*(e&0xffff) + 6*(e>>16&0xffff) + 4*(e>>32&0xffff) + 2*(e>>48) +
			7*(o&0xffff) + 5*(o>>16&0xffff) + 3*(o>>32&0xffff) + o>>48
		s1 += laneSum(e) + laneSum(o)
		if blocks++; blocks == 4096 { // 512 KiB: s2 stays far below 2^64
			s1, s2, blocks = s1%mod, s2%mod, 0
		}
	}
	for _, c := range p {
		s1 += uint64(c)
		s2 += s1
	}
	return uint32(s2%mod<<16 | s1%mod)
}

func laneSum(v uint64) uint64 { return v&0xffff + v>>16&0xffff + v>>32&0xffff + v>>48 }
