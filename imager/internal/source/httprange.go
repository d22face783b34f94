package source

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// A server or a proxy in front of it may answer a Range request with
// another range, with the whole file, or with a body that does not match
// its own headers. None of that is data: the reply is checked against what
// was asked before a byte of it is used. Such a reply is ErrProtocol
// (permanent): a proxy that serves the wrong bytes serves them again on
// the next attempt. Only a connection cut mid-body (io.ErrUnexpectedEOF
// from net/http) is transient.

// contentRange is a parsed Content-Range header: bytes first-last/total
// (total -1 for "*").
type contentRange struct{ first, last, total int64 }

// parseContentRange reads a 206's Content-Range, strictly: "bytes
// FIRST-LAST/TOTAL" or "bytes FIRST-LAST/*", with FIRST <= LAST < TOTAL.
func parseContentRange(h string) (contentRange, error) {
	spec, ok := strings.CutPrefix(h, "bytes ")
	span, total, ok2 := strings.Cut(spec, "/")
	first, last, ok3 := strings.Cut(span, "-")
	if !ok || !ok2 || !ok3 {
		return contentRange{}, fmt.Errorf("Content-Range %q is not bytes FIRST-LAST/TOTAL", h)
	}
	cr := contentRange{total: -1}
	var err error
	num := func(s string) int64 {
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || n < 0 || s == "" || s[0] == '+' {
			err = fmt.Errorf("Content-Range %q: %q is not a byte position", h, s)
		}
		return n
	}
	cr.first, cr.last = num(first), num(last)
	if total != "*" {
		cr.total = num(total)
	}
	switch {
	case err != nil:
		return contentRange{}, err
	case cr.first > cr.last || cr.total >= 0 && cr.last >= cr.total:
		return contentRange{}, fmt.Errorf("Content-Range %q is not a range of the file", h)
	}
	return cr, nil
}

// checkPartial checks that a 206 reply is bytes [from, to] of a file of
// size bytes, as asked: to < 0 is "to the end", size < 0 unknown (then
// the reply's own total, if any, is taken). It returns the body limited to
// exactly that range and the file's size as the reply states it.
func checkPartial(resp *http.Response, shown string, from, to, size int64) (io.ReadCloser, int64, error) {
	fail := func(err error) (io.ReadCloser, int64, error) {
		resp.Body.Close()
		return nil, 0, protocolErr(fmt.Errorf("%s: asked for bytes %d-%s: %w", shown, from, endString(to), err))
	}
	h := resp.Header.Get("Content-Range")
	if h == "" {
		return fail(errors.New("a 206 reply without Content-Range"))
	}
	cr, err := parseContentRange(h)
	if err != nil {
		return fail(err)
	}
	if size >= 0 && cr.total >= 0 && cr.total != size { // "*": a total the server does not know
		return fail(fmt.Errorf("Content-Range %q: the file has %d bytes", h, size))
	}
	if size < 0 {
		size = cr.total
	}
	want := to
	if want < 0 && size >= 0 {
		want = size - 1
	}
	if cr.first != from || want >= 0 && cr.last != want {
		return fail(fmt.Errorf("got Content-Range %q", h))
	}
	n := cr.last - cr.first + 1
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return fail(fmt.Errorf("Content-Range %q but Content-Length %d", h, resp.ContentLength))
	}
	return &exactBody{rc: resp.Body, left: n, shown: shown, at: from}, size, nil
}

func endString(to int64) string {
	if to < 0 {
		return ""
	}
	return strconv.FormatInt(to, 10)
}

// exactBody is a reply body that must hold exactly left more bytes: one
// that ends cleanly before (a chunked reply cut short on purpose) or goes
// on after is the server's error.
type exactBody struct {
	rc    io.ReadCloser
	left  int64
	shown string
	at    int64 // the file offset of the next byte
}

func (b *exactBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		var one [1]byte
		if n, _ := io.ReadFull(b.rc, one[:]); n > 0 {
			return 0, protocolErr(fmt.Errorf("%s: the reply goes on past byte %d, the end of the range", b.shown, b.at-1))
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	b.at += int64(n)
	if err == io.EOF && b.left > 0 {
		return n, protocolErr(fmt.Errorf("%s: the reply ended at byte %d, %d bytes short of its range", b.shown, b.at, b.left))
	}
	if err == io.EOF {
		err = nil // the next Read checks nothing follows
	}
	return n, err
}

func (b *exactBody) Close() error { return b.rc.Close() }
