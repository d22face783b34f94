package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
)

// Random-access reads over HTTP cost what they use. The copy engine reads
// a file in two ways: a flat extent (or a delta stored in disk order) in
// runs of reads, each starting where one of the last ended, by workers
// taking turns; a delta a guest wrote at random at scattered offsets, a
// grain at a time. A run is worth fetching in large blocks and ahead of
// the reader; a scattered grain is worth its own bytes only: a 1 MiB
// block for a 4 KiB grain, or read-ahead after it, fetches hundreds of
// times what the disk holds (and slower than the whole file would be).
//
// So each file keeps the ends of its recent reads (a few: workers
// interleave). A read starting at, or a little past, one of them extends
// that stream; once a stream has read sequentialRun bytes, its reads go
// through a cache of aligned 1 MiB blocks, each fetched by one Range
// request, and the next readAhead blocks are fetched before it asks for
// them (ESXi throttles each connection: up to Connections requests are in
// flight). Any other read smaller than largeRead is a random one: unless
// cached blocks already hold it, it goes through aligned 64 KiB blocks
// (the grains near it are most likely read soon: a delta holds only
// grains in use, and a host's cost is per request as much as per byte),
// as long as the small blocks of the file have fetched less than its size
// and less than the larger of twice what its random reads asked for and
// the cache: a delta the cache can hold is worth fetching whole in small
// blocks, while one much larger, read at random, would fetch each small
// block again and again.
// Past that, a random read is fetched as exactly its bytes, into the
// caller's buffer. A read of largeRead or more is fetched as 1 MiB
// blocks, in parallel.
//
// The connections and the cache are the source's, shared by all its
// files (a chain's descriptor, extents and parents: one blockPool per
// HTTPFS), so a chain of many files holds no more than one file would.
// Memory is bounded whatever the sizes: at most cacheBlocks + readAhead
// MiB are kept (small blocks counted by their size), plus at most
// Connections blocks being fetched for entries already dropped from the
// cache (a read fetched exactly uses the caller's buffer); with the
// default 4 connections that is (16+8+4) × 1 MiB = 28 MiB per import,
// and at most (24 + N) MiB for N, the read-ahead being at most
// maxReadAhead blocks; the buffers of dropped blocks are kept for the
// next fetches (at most 9 MiB of them: maxFree). The cache was 32
// blocks, each fetch a new buffer: with the Go heap's headroom a 1 GiB
// chain's import peaked at 100-147 MiB of RSS, over issue 16's 64 MiB.
// And what a file serves is bounded by what is
// used: for its random reads, min(size, max(2 × asked, cache)) +
// randomSlack + one small block, plus the bytes read exactly (below
// twice its size when each byte is read once); for its sequential runs,
// their bytes, their gaps and one read-ahead.

const (
	httpBlockSize = 1 << 20
	cacheBlocks   = 16
	// MaxConnections bounds --http-connections: more parallel requests
	// than this only add load on the host.
	MaxConnections = 16
	// sequentialRun is how much a stream must have read before it is
	// taken for a sequential reader: 16 grains of 4 KiB in a row, which
	// reads at scattered offsets do not make by chance.
	sequentialRun = 64 << 10
	// streamGap is how far past a recent end a read may start and still
	// extend its stream: a parent is read around its child's grains
	// (the gaps are the grains the child holds).
	streamGap = 64 << 10
	// recentStreams is how many streams a file tracks: one or two per
	// copy worker.
	recentStreams = 8
	// largeRead: a read of this much or more is fetched as blocks, in
	// parallel over the connections, wherever it is.
	largeRead = httpBlockSize / 2
	// smallBlockSize is the block of a random read.
	smallBlockSize = 64 << 10
	// maxReadAhead bounds the blocks read ahead, whatever the
	// connections.
	maxReadAhead = 8
	// randomSlack is what a file's random reads may fetch beyond twice
	// what they asked for before they are fetched exactly.
	randomSlack = 1 << 20
)

// errDropped ends a read-ahead fetch nobody waits for any more.
var errDropped = errors.New("source: read-ahead block dropped from the cache")

// blockPool is the connection slots and block cache of one source.
type blockPool struct {
	slots     chan struct{} // one per request in flight
	readAhead int           // blocks fetched ahead of the sequential readers
	keep      int64         // bytes of blocks the cache keeps

	mu     sync.Mutex
	blocks map[blockKey]*httpBlock
	order  []blockKey // least recently used first
	cached int64      // bytes of the blocks in the cache
	made   int64      // bytes of the blocks made so far: a block's age is made - born
	// ahead counts the cached blocks read ahead that no reader has asked
	// for yet. It is the pool's, not each stream's: readAhead bounds it,
	// so the read-ahead of several files read at once (a chain's delta
	// and parents) shares the cache's room for it, instead of each
	// evicting the others' before they are read and fetching them again.
	ahead int
	// free holds the buffers of blocks done with (out of the cache, read
	// by nobody), by size class, for the next fetches: a 1 GiB chain
	// would otherwise leave a GiB of garbage behind it, and the collector
	// lets garbage grow as large as what is live (the cache) before it
	// runs, which doubled the import's footprint.
	free [2][][]byte
}

// maxFree is how many buffers of each size free holds: 1 MiB ones for
// what a burst of reads evicts before the fetches of its blocks start (a
// connection's turn can be several blocks away: the copy workers' reads
// of 4 blocks each, and a read-ahead); small ones, fetched one at a time,
// 16 (1 MiB). More would be live memory for nothing: in a scattered
// chain's import, which evicts more than it fetches into blocks, free
// stays full. (A small buffer is not cut from a free large one: one small
// block still cached would keep the whole large buffer.)
var maxFree = [2]int{8, 16}

// blockKey is the block of r of size bytes (httpBlockSize or
// smallBlockSize, less at the end of the file) at byte at, a multiple of
// its size.
type blockKey struct {
	r        *httpReaderAt
	at, size int64
}

func (r *httpReaderAt) big(idx int64) blockKey {
	return blockKey{r, idx * httpBlockSize, httpBlockSize}
}

func newBlockPool(connections int) *blockPool {
	conns := min(max(connections, 1), MaxConnections)
	ahead := 0
	if conns > 1 {
		// Enough to keep every connection busy for two rounds while the
		// reader copies what it got; one connection is today's reader,
		// which only fetches what is asked. Past maxReadAhead, the
		// copy workers' own reads keep the other connections busy, and
		// the memory stays what 4 connections use.
		ahead = min(2*conns, maxReadAhead)
	}
	return &blockPool{slots: make(chan struct{}, conns), readAhead: ahead, keep: int64(cacheBlocks+ahead) * httpBlockSize, blocks: map[blockKey]*httpBlock{}}
}

// httpReaderAt reads a URL at random offsets with Range requests.
type httpReaderAt struct {
	h         *httpClient
	ctx       context.Context
	size      int64
	validator string
	pool      *blockPool
	// failures counts failed fetches since the last one that worked,
	// over all connections: --retries bounds the reader's retries, not
	// each connection's (a host failing fails them all at once, and
	// should be given up on as soon as one connection would).
	failures atomic.Int64
	// streams are the file's recent runs of reads; the pool's mu guards
	// them and reads.
	streams [recentStreams]stream
	reads   uint64
	// asked is the bytes random reads asked for, fetched what their
	// small blocks fetched: see smallBlocks.
	asked, fetched int64
}

// stream is a run of reads, each starting at or a little past where one
// before ended.
type stream struct {
	end  int64  // where its last read ended
	read int64  // bytes its reads asked for (0: the slot is free)
	used uint64 // reads of the file when it last grew: the oldest is replaced
}

type httpBlock struct {
	ready  chan struct{}
	data   []byte
	err    error
	wanted bool  // a ReadAt waits for it, not only the read-ahead
	done   bool  // a sequential reader read past its end
	born   int64 // the pool's made when it was made
	// refs counts the ReadAts that may still copy from data, loaded says
	// load is done with it; both the pool's mu guards. data goes back to
	// the pool's free buffers only once the block is out of the cache,
	// loaded and unreferenced: a block dropped while a reader copies from
	// it, or while it is being fetched, keeps its buffer until then.
	refs   int
	loaded bool
	ahead  bool // counted in the pool's ahead
}

func newHTTPReaderAt(ctx context.Context, h *httpClient, size int64, validator string, pool *blockPool) *httpReaderAt {
	return &httpReaderAt{h: h, ctx: ctx, size: size, validator: validator, pool: pool}
}

// ReadAt implements io.ReaderAt.
func (r *httpReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", r.h.shown, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.size)
	keys, blocks := r.start(off, end)
	if blocks == nil {
		if err := r.fetchExact(p[:end-off], off); err != nil {
			return 0, err
		}
		return r.done(p, off, end)
	}
	defer r.release(keys, blocks)
	n := 0
	for i, b := range blocks {
		<-b.ready
		if b.err != nil {
			return n, b.err
		}
		n += copy(p[n:end-off], b.data[off+int64(n)-keys[i].at:])
	}
	return r.done(p, off, end)
}

// done is ReadAt's result once p holds bytes off to end.
func (r *httpReaderAt) done(p []byte, off, end int64) (int, error) {
	if end < off+int64(len(p)) {
		return int(end - off), io.EOF
	}
	return len(p), nil
}

// start returns the blocks holding bytes off to end, fetching those not
// cached and reading ahead for a sequential reader, or nil for a read to
// fetch exactly.
func (r *httpReaderAt) start(off, end int64) ([]blockKey, []*httpBlock) {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	sequential := r.follow(off, end)
	size := int64(httpBlockSize)
	if !sequential && end-off < largeRead && !r.cached(off, end) {
		r.asked += end - off
		if !r.smallBlocks() {
			return nil, nil
		}
		size = smallBlockSize
	}
	var keys []blockKey
	var blocks []*httpBlock
	for at := off / size * size; at < end; at += size {
		k := blockKey{r, at, size}
		if _, ok := p.blocks[k]; !ok && size == smallBlockSize {
			r.fetched += min(at+size, r.size) - at
		}
		b := r.lookup(k)
		if b.ahead {
			b.ahead = false
			p.ahead--
		}
		b.wanted = true
		b.refs++ // until ReadAt has copied from it: release
		// A sequential reader past a block's end is done with it: it
		// goes first, before random reads' small blocks that will be
		// read again.
		b.done = b.done || sequential && end >= at+size
		keys, blocks = append(keys, k), append(blocks, b)
	}
	if sequential {
		last := (end - 1) / httpBlockSize
		lastBlock := (r.size - 1) / httpBlockSize
		for idx := last + 1; idx <= min(last+int64(p.readAhead), lastBlock); idx++ {
			if _, ok := p.blocks[r.big(idx)]; ok {
				continue
			}
			if p.ahead >= p.readAhead {
				break
			}
			r.lookup(r.big(idx)).ahead = true
			p.ahead++
		}
	}
	return keys, blocks
}

// release is ReadAt's, once done with the blocks start returned.
func (r *httpReaderAt) release(keys []blockKey, blocks []*httpBlock) {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range blocks {
		b.refs--
		if p.blocks[keys[i]] != b {
			p.recycle(b)
		}
	}
}

// recycle keeps the buffer of b, a block out of the cache, for another
// fetch, if nobody can read it any more; the pool's mu is held.
func (p *blockPool) recycle(b *httpBlock) {
	if b.refs > 0 || !b.loaded || b.data == nil {
		return
	}
	p.put(b.data)
	b.data = nil
}

// sizeClass is the index in free of buffers of capacity c, or -1.
func sizeClass(c int) int {
	switch c {
	case httpBlockSize:
		return 0
	case smallBlockSize:
		return 1
	}
	return -1
}

// put keeps buf for get; the pool's mu is held.
func (p *blockPool) put(buf []byte) {
	if c := sizeClass(cap(buf)); c >= 0 && len(p.free[c]) < maxFree[c] {
		p.free[c] = append(p.free[c], buf[:cap(buf)])
	}
}

// get returns a buffer of n bytes for a block of size bytes (n is less
// at the end of the file), a kept one if there is one.
func (p *blockPool) get(size, n int64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := sizeClass(int(size)); c >= 0 {
		if f := p.free[c]; len(f) > 0 {
			buf := f[len(f)-1]
			p.free[c] = f[:len(f)-1]
			return buf[:n]
		}
	}
	return make([]byte, n, size)
}

// smallBlocks: the file's random reads may go on through small blocks;
// the pool's mu is held.
func (r *httpReaderAt) smallBlocks() bool {
	return r.fetched < min(r.size, max(2*r.asked, r.pool.keep))+randomSlack
}

// cached: 1 MiB blocks (read ahead, or of a run) hold bytes off to end
// already, fetched or being fetched; the pool's mu is held.
func (r *httpReaderAt) cached(off, end int64) bool {
	for idx := off / httpBlockSize; idx <= (end-1)/httpBlockSize; idx++ {
		if _, ok := r.pool.blocks[r.big(idx)]; !ok {
			return false
		}
	}
	return true
}

// follow records a read of bytes off to end and says whether it is a
// sequential reader's: it extends a stream that has read sequentialRun
// bytes. A read that extends none starts a stream in the place of the
// one left longest; the pool's mu is held.
func (r *httpReaderAt) follow(off, end int64) bool {
	r.reads++
	oldest := 0
	for i := range r.streams {
		s := &r.streams[i]
		if s.read > 0 && off >= s.end && off-s.end <= streamGap {
			s.end, s.read, s.used = end, s.read+end-off, r.reads
			return s.read >= sequentialRun
		}
		if s.used < r.streams[oldest].used {
			oldest = i
		}
	}
	r.streams[oldest] = stream{end: end, read: end - off, used: r.reads}
	return false
}

// lookup returns block k, fetched or being fetched, as the most recently
// used; the pool's mu is held.
func (r *httpReaderAt) lookup(k blockKey) *httpBlock {
	p := r.pool
	if b, ok := p.blocks[k]; ok {
		if i := slices.Index(p.order, k); i >= 0 {
			p.order = append(p.order[:i], p.order[i+1:]...)
		}
		p.order = append(p.order, k)
		return b
	}
	p.made += k.size
	b := &httpBlock{ready: make(chan struct{}), born: p.made}
	for p.cached+k.size > p.keep && len(p.order) > 0 {
		p.evict()
	}
	p.blocks[k] = b
	p.order = append(p.order, k)
	p.cached += k.size
	go r.load(k, b)
	return b
}

// evict drops, first, a read-ahead block nobody asked for while the cache
// turned over (keep bytes of blocks were made since: its reader went
// elsewhere); else the oldest block a sequential reader is done with;
// else the least recently used block a reader has asked for; only when
// every block is read ahead, recently, the oldest of them.
// Blocks read are touched again as they are read, so plain LRU would drop
// the read-ahead of one file to keep the blocks other files have finished
// with, and without the age limit read-ahead never used would fill the
// cache; the pool's mu is held.
func (p *blockPool) evict() {
	i := slices.IndexFunc(p.order, func(k blockKey) bool {
		b := p.blocks[k]
		return !b.wanted && p.made-b.born > p.keep
	})
	if i < 0 {
		i = slices.IndexFunc(p.order, func(k blockKey) bool { return p.blocks[k].done })
	}
	if i < 0 {
		i = slices.IndexFunc(p.order, func(k blockKey) bool { return p.blocks[k].wanted })
	}
	if i < 0 {
		i = 0
	}
	p.drop(i)
}

// drop removes the block at order[i] from the cache; the pool's mu is
// held.
func (p *blockPool) drop(i int) {
	k := p.order[i]
	b := p.blocks[k]
	if b.ahead {
		b.ahead = false
		p.ahead--
	}
	p.recycle(b)
	delete(p.blocks, k)
	p.cached -= k.size
	p.order = append(p.order[:i], p.order[i+1:]...)
}

// load fetches block k into b once a connection slot is free. A
// read-ahead block dropped from the cache before its turn, which no
// reader waits for, is not fetched at all.
func (r *httpReaderAt) load(k blockKey, b *httpBlock) {
	defer close(b.ready)
	p := r.pool
	select {
	case p.slots <- struct{}{}:
	case <-r.ctx.Done():
		b.err = context.Cause(r.ctx)
		r.forget(k, b)
		return
	}
	p.mu.Lock()
	dropped := !b.wanted && p.blocks[k] != b
	p.mu.Unlock()
	if dropped {
		<-p.slots
		b.err = errDropped
		return
	}
	b.data, b.err = r.fetchBlock(k)
	<-p.slots
	if b.err != nil {
		r.forget(k, b) // the next read tries again
	}
	p.mu.Lock()
	b.loaded = true
	if p.blocks[k] != b {
		p.recycle(b) // dropped while it was fetched
	}
	p.mu.Unlock()
}

func (r *httpReaderAt) forget(k blockKey, b *httpBlock) {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocks[k] == b {
		if i := slices.Index(p.order, k); i >= 0 {
			p.drop(i)
		}
	}
}

// fetchExact reads bytes off to off+len(buf) into buf once a connection
// slot is free.
func (r *httpReaderAt) fetchExact(buf []byte, off int64) error {
	p := r.pool
	select {
	case p.slots <- struct{}{}:
	case <-r.ctx.Done():
		return context.Cause(r.ctx)
	}
	defer func() { <-p.slots }()
	return r.fetch(buf, off)
}

// fetchBlock reads block k; the caller holds a connection slot.
func (r *httpReaderAt) fetchBlock(k blockKey) ([]byte, error) {
	buf := r.pool.get(k.size, min(k.at+k.size, r.size)-k.at)
	if err := r.fetch(buf, k.at); err != nil {
		r.pool.mu.Lock()
		r.pool.put(buf)
		r.pool.mu.Unlock()
		return nil, err
	}
	return buf, nil
}

// fetch reads bytes from to from+len(buf) into buf, retrying transient
// failures, including bodies cut short.
func (r *httpReaderAt) fetch(buf []byte, from int64) error {
	to := from + int64(len(buf)) - 1
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancelCause(r.ctx)
		resp, err := r.h.get(ctx, from, to, r.validator)
		if err != nil {
			cancel(nil)
			return err
		}
		resp.Body = watch(ctx, cancel, resp.Body, r.h.opts, "the reply")
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			return protocolErr(fmt.Errorf("%s: the server ignored a Range request (or the file changed)", r.h.shown))
		}
		body, _, err := checkPartial(resp, r.h.shown, from, to, r.size)
		if err != nil {
			return err
		}
		_, err = io.ReadFull(body, buf)
		if err == nil {
			_, err = body.Read(make([]byte, 1)) // io.EOF, unless the reply goes on
		}
		body.Close()
		if err == io.EOF {
			r.failures.Store(0)
			return nil
		}
		if errors.Is(err, ErrProtocol) {
			return err
		}
		if r.ctx.Err() != nil || r.failures.Add(1) > int64(r.h.opts.Retries) {
			return transient(fmt.Errorf("%s: bytes %d-%d: %w", r.h.shown, from, to, err))
		}
		if err := r.h.wait(r.ctx, attempt); err != nil {
			return err
		}
	}
}
