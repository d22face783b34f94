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

// Random-access reads over HTTP go through a cache of aligned blocks, each
// fetched by one Range request. ESXi (and many servers) throttle each
// connection, so a source keeps up to Connections requests in flight: the
// blocks of one large read are fetched in parallel, and a reader moving
// forward through a file (the copy engine's workers take its chunks in
// order) has the next blocks fetched before it asks for them.
//
// The connections and the cache are the source's, shared by all its
// files (a chain's descriptor, extents and parents: one blockPool per
// HTTPFS), so a chain of many files holds no more than one file would.
// Memory is bounded whatever the sizes: at most cacheBlocks + readAhead
// blocks are kept, plus at most Connections blocks being fetched for
// entries already dropped from the cache; with the default 4 connections
// that is (32+8+4) × 1 MiB = 44 MiB per import.

const (
	httpBlockSize = 1 << 20
	cacheBlocks   = 32
	// MaxConnections bounds --http-connections: more parallel requests
	// than this only add load on the host.
	MaxConnections = 16
)

// errDropped ends a read-ahead fetch nobody waits for any more.
var errDropped = errors.New("source: read-ahead block dropped from the cache")

// blockPool is the connection slots and block cache of one source.
type blockPool struct {
	slots     chan struct{} // one per request in flight
	readAhead int           // blocks fetched ahead of a reader moving forward
	keep      int           // blocks the cache keeps

	mu     sync.Mutex
	blocks map[blockKey]*httpBlock
	order  []blockKey // least recently used first
}

type blockKey struct {
	r   *httpReaderAt
	idx int64
}

func newBlockPool(connections int) *blockPool {
	conns := min(max(connections, 1), MaxConnections)
	ahead := 0
	if conns > 1 {
		// Enough to keep every connection busy for two rounds while the
		// reader copies what it got; one connection is today's reader,
		// which only fetches what is asked.
		ahead = 2 * conns
	}
	return &blockPool{slots: make(chan struct{}, conns), readAhead: ahead, keep: cacheBlocks + ahead, blocks: map[blockKey]*httpBlock{}}
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
}

type httpBlock struct {
	ready  chan struct{}
	data   []byte
	err    error
	wanted bool // a ReadAt waits for it, not only the read-ahead
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
	first, last := off/httpBlockSize, (end-1)/httpBlockSize
	blocks := r.start(first, last)
	n := 0
	for i, b := range blocks {
		<-b.ready
		if b.err != nil {
			return n, b.err
		}
		at := off + int64(n)
		n += copy(p[n:end-off], b.data[at-(first+int64(i))*httpBlockSize:])
	}
	if end < off+int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// start returns blocks first to last, fetching those not cached, and reads
// ahead when the reader moves forward: the block before first was read
// (or read ahead) already.
func (r *httpReaderAt) start(first, last int64) []*httpBlock {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	_, forward := p.blocks[blockKey{r, first - 1}]
	forward = forward || first == 0
	blocks := make([]*httpBlock, 0, last-first+1)
	for idx := first; idx <= last; idx++ {
		b := r.lookup(idx)
		b.wanted = true
		blocks = append(blocks, b)
	}
	if forward {
		lastBlock := (r.size - 1) / httpBlockSize
		for idx := last + 1; idx <= min(last+int64(p.readAhead), lastBlock); idx++ {
			if _, ok := p.blocks[blockKey{r, idx}]; !ok {
				r.lookup(idx)
			}
		}
	}
	return blocks
}

// lookup returns block idx, fetched or being fetched, as the most
// recently used; the pool's mu is held.
func (r *httpReaderAt) lookup(idx int64) *httpBlock {
	p, k := r.pool, blockKey{r, idx}
	if b, ok := p.blocks[k]; ok {
		if i := slices.Index(p.order, k); i >= 0 {
			p.order = append(p.order[:i], p.order[i+1:]...)
		}
		p.order = append(p.order, k)
		return b
	}
	b := &httpBlock{ready: make(chan struct{})}
	p.blocks[k] = b
	if len(p.order) >= p.keep {
		p.evict()
	}
	p.order = append(p.order, k)
	go r.load(idx, b)
	return b
}

// evict drops the least recently used block a reader has asked for; only
// when every block is read ahead and not yet asked for, the oldest of
// them. Blocks read are touched again as they are read, so plain LRU
// would drop the read-ahead of one file to keep the blocks other files
// have finished with; the pool's mu is held.
func (p *blockPool) evict() {
	i := slices.IndexFunc(p.order, func(k blockKey) bool { return p.blocks[k].wanted })
	if i < 0 {
		i = 0
	}
	delete(p.blocks, p.order[i])
	p.order = append(p.order[:i], p.order[i+1:]...)
}

// load fetches block idx into b once a connection slot is free. A
// read-ahead block dropped from the cache before its turn, which no
// reader waits for, is not fetched at all.
func (r *httpReaderAt) load(idx int64, b *httpBlock) {
	defer close(b.ready)
	p := r.pool
	select {
	case p.slots <- struct{}{}:
	case <-r.ctx.Done():
		b.err = context.Cause(r.ctx)
		r.forget(idx, b)
		return
	}
	p.mu.Lock()
	dropped := !b.wanted && p.blocks[blockKey{r, idx}] != b
	p.mu.Unlock()
	if dropped {
		<-p.slots
		b.err = errDropped
		return
	}
	b.data, b.err = r.fetch(idx)
	<-p.slots
	if b.err != nil {
		r.forget(idx, b) // the next read tries again
	}
}

func (r *httpReaderAt) forget(idx int64, b *httpBlock) {
	p, k := r.pool, blockKey{r, idx}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocks[k] == b {
		delete(p.blocks, k)
		if i := slices.Index(p.order, k); i >= 0 {
			p.order = append(p.order[:i], p.order[i+1:]...)
		}
	}
}

// fetch reads one block, retrying transient failures, including bodies cut
// short.
func (r *httpReaderAt) fetch(idx int64) ([]byte, error) {
	from := idx * httpBlockSize
	to := min(from+httpBlockSize, r.size) - 1
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancelCause(r.ctx)
		resp, err := r.h.get(ctx, from, to, r.validator)
		if err != nil {
			cancel(nil)
			return nil, err
		}
		resp.Body = watch(ctx, cancel, resp.Body, r.h.opts, "the reply")
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			return nil, protocolErr(fmt.Errorf("%s: the server ignored a Range request (or the file changed)", r.h.shown))
		}
		body, _, err := checkPartial(resp, r.h.shown, from, to, r.size)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, to-from+1)
		_, err = io.ReadFull(body, buf)
		if err == nil {
			_, err = body.Read(make([]byte, 1)) // io.EOF, unless the reply goes on
		}
		body.Close()
		if err == io.EOF {
			r.failures.Store(0)
			return buf, nil
		}
		if errors.Is(err, ErrProtocol) {
			return nil, err
		}
		if r.ctx.Err() != nil || r.failures.Add(1) > int64(r.h.opts.Retries) {
			return nil, transient(fmt.Errorf("%s: bytes %d-%d: %w", r.h.shown, from, to, err))
		}
		if err := r.h.wait(r.ctx, attempt); err != nil {
			return nil, err
		}
	}
}
