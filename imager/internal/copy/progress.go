package copy

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Progress reports how far a Job command is: a JSON line on stdout every
// interval (the controller reads the pod log), and optionally a human
// line on stderr. A spooled import has two phases, each half the bar.
type Progress struct {
	out      io.Writer
	interval time.Duration
	human    func(int64)

	mu           sync.Mutex
	done, total  int64
	base, weight float64
	stopc        chan struct{}
	wg           sync.WaitGroup
}

// NewProgress starts reports on out every interval (0: none), and
// human ones on stderr.
func NewProgress(out, stderr io.Writer, interval time.Duration, human bool) *Progress {
	p := &Progress{out: out, interval: interval, weight: 100, stopc: make(chan struct{})}
	if human {
		p.human = Printer(stderr, 100)
	}
	if interval > 0 {
		p.wg.Go(p.loop)
	}
	return p
}

func (p *Progress) loop() {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.emit(false)
		case <-p.stopc:
			return
		}
	}
}

// emit prints the JSON line (complete: 100%).
func (p *Progress) emit(complete bool) {
	p.mu.Lock()
	line := jobapi.Progress{BytesDone: p.done, BytesTotal: p.total, Progress: p.base}
	if p.total > 0 {
		line.Progress += p.weight * float64(min(p.done, p.total)) / float64(p.total)
	}
	if complete {
		line.Progress, line.BytesDone = 100, max(p.done, p.total)
	}
	p.mu.Unlock()
	line.Progress = float64(int(line.Progress*100)) / 100
	b, _ := json.Marshal(line)
	p.out.Write(append(b, '\n'))
}

func (p *Progress) update(f func()) {
	p.mu.Lock()
	f()
	pct := p.base
	if p.total > 0 {
		pct += p.weight * float64(min(p.done, p.total)) / float64(p.total)
	}
	p.mu.Unlock()
	if p.human != nil {
		p.human(int64(pct))
	}
}

func (p *Progress) Set(done int64)   { p.update(func() { p.done = done }) }
func (p *Progress) Add(n int64)      { p.update(func() { p.done += n }) }
func (p *Progress) SetTotal(t int64) { p.update(func() { p.total = max(t, 0) }) }

// Done is the bytes done so far in this phase (an NFC lease's progress
// is computed from it).
func (p *Progress) Done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Phase starts the spool phase (the first half) or the import after it.
func (p *Progress) Phase(name string) {
	p.update(func() {
		p.done, p.weight = 0, 50
		if name == "import" {
			p.base = 50
		}
	})
}

// Stop ends the reports with a last line.
func (p *Progress) Stop(ok bool) {
	close(p.stopc)
	p.wg.Wait()
	if p.interval > 0 {
		p.emit(ok)
	}
	if ok && p.human != nil {
		p.human(-1)
	}
}
