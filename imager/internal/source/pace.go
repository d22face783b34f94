package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// A source that trickles is as stuck as one that stalls, but a stall
// timer never fires on it: every byte resets the timer. So sources are
// also held to a minimum throughput, measured only over the time imager
// spends waiting for them (a copy slowed down by its target does not make
// its source look slow).

// ErrTooSlow: the source delivered less than the minimum throughput.
var ErrTooSlow = errors.New("source: slower than the minimum throughput")

// Pace is the minimum-throughput rule: at least Min bytes per second over
// every Window of waiting for the source (Min 0: no rule).
type Pace struct {
	Min    int64
	Window time.Duration
}

// enough is how many bytes a connection must deliver to count as having
// recovered from a failure: a window's worth at the minimum rate, so a
// trickle cannot keep resetting the retries.
func (p Pace) enough() int64 {
	if p.Min <= 0 || p.Window <= 0 {
		return 1
	}
	return max(1, int64(float64(p.Min)*p.Window.Seconds()))
}

// meter applies a Pace to one connection or stream.
type meter struct {
	Pace
	what   string
	waited time.Duration
	got    int64
}

// observe adds a read of n bytes that waited d; once a window of waiting
// has passed it fails if the window brought too little.
func (m *meter) observe(n int, d time.Duration) error {
	if m.Min <= 0 || m.Window <= 0 {
		return nil
	}
	m.waited += d
	m.got += int64(n)
	if m.waited < m.Window {
		return nil
	}
	rate := float64(m.got) / m.waited.Seconds()
	waited, got := m.waited, m.got
	m.waited, m.got = 0, 0
	if rate < float64(m.Min) {
		return tag(ErrTooSlow, transient(fmt.Errorf("%s: %d bytes in %v of waiting, below the minimum throughput of %d bytes/s", m.what, got, waited.Round(time.Millisecond), m.Min)))
	}
	return nil
}

// Paced is r (a stream imager cannot reconnect: stdin, a local pipe) held
// to p, and stopped once ctx is done even while a read is blocked: the
// read runs on its own goroutine, which is abandoned to its blocked read.
func Paced(ctx context.Context, r io.Reader, p Pace, what string) io.Reader {
	pr := &pacedReader{ctx: ctx, m: meter{Pace: p, what: what}, req: make(chan int), res: make(chan readResult, 1), buf: make([]byte, 256<<10)}
	go pr.loop(r)
	return pr
}

type readResult struct {
	n   int
	err error
}

type pacedReader struct {
	ctx     context.Context
	m       meter
	req     chan int
	res     chan readResult
	buf     []byte // the reading goroutine's, between a request and its result
	waiting bool
	err     error // once stopped, always
}

func (p *pacedReader) loop(r io.Reader) {
	for n := range p.req {
		k, err := r.Read(p.buf[:n])
		p.res <- readResult{k, err}
	}
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if len(b) == 0 {
		return 0, nil
	}
	start := time.Now()
	if !p.waiting {
		p.req <- min(len(b), len(p.buf))
		p.waiting = true
	}
	// A timer shorter than the window: a source that sends nothing at
	// all is caught by the window too, not only one that trickles.
	var tickC <-chan time.Time
	if p.m.Min > 0 && p.m.Window > 0 {
		tick := time.NewTicker(max(p.m.Window/4, time.Millisecond))
		defer tick.Stop()
		tickC = tick.C
	}
	for {
		select {
		case r := <-p.res:
			p.waiting = false
			n := copy(b, p.buf[:r.n])
			if err := p.m.observe(n, time.Since(start)); err != nil && r.err == nil {
				p.err = err
				return n, nil
			}
			return n, r.err
		case <-tickC:
			if err := p.m.observe(0, time.Since(start)); err != nil {
				p.err = err
				return 0, err
			}
			start = time.Now()
		case <-p.ctx.Done():
			p.err = context.Cause(p.ctx)
			return 0, p.err
		}
	}
}

// watchedBody is an HTTP reply body held to the stall timeout and the
// minimum throughput: a connection that delivers nothing for the stall
// timeout, or too little over a window, is cut (its request's context
// cancelled with the reason as cause), and reads fail with that reason.
type watchedBody struct {
	body    io.ReadCloser
	ctx     context.Context // the request's
	cancel  context.CancelCauseFunc
	timeout time.Duration
	stall   *time.Timer
	m       meter
}

func watch(ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, o HTTPOptions, what string) *watchedBody {
	w := &watchedBody{body: body, ctx: ctx, cancel: cancel, timeout: o.StallTimeout, m: meter{Pace: o.Pace, what: what}}
	if w.timeout > 0 {
		w.stall = time.AfterFunc(w.timeout, func() {
			cancel(fmt.Errorf("no data for %v", w.timeout))
		})
	}
	return w
}

func (w *watchedBody) Read(p []byte) (int, error) {
	start := time.Now()
	n, err := w.body.Read(p)
	if n > 0 && w.stall != nil {
		w.stall.Reset(w.timeout)
	}
	if perr := w.m.observe(n, time.Since(start)); perr != nil {
		w.cancel(perr)
		return n, perr
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(w.ctx); cause != nil {
			err = cause // the stall timer's, or the job's
		}
	}
	return n, err
}

func (w *watchedBody) Close() error {
	if w.stall != nil {
		w.stall.Stop()
	}
	w.cancel(nil)
	return w.body.Close()
}
