package jobapi

import "strings"

// Redacted stands in for what RedactURL removes.
const Redacted = "REDACTED"

// RedactURL returns s with the secrets of every URL in it replaced by
// REDACTED: the user info (https://user:pass@host/x becomes
// https://REDACTED@host/x), each query value (signed URLs carry their token
// there: ?sig=abc becomes ?sig=REDACTED, a bare ?abc becomes ?REDACTED)
// and the fragment. Scheme, host and path stay, so a message still says
// what was fetched.
//
// s may be one URL or any text that holds URLs, such as Go's net/http
// errors (`Get "https://u:p@h/x?sig=...": EOF`): a URL is whatever follows
// "://" up to white space, a quote or an angle bracket. Redacting twice
// changes nothing. The controller uses it for status and events too.
func RedactURL(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			break
		}
		rest := s[i+3:]
		end := strings.IndexAny(rest, " \t\r\n\"'<>`")
		if end < 0 {
			end = len(rest)
		}
		b.WriteString(s[:i+3])
		b.WriteString(redactAfterScheme(rest[:end]))
		s = rest[end:]
	}
	b.WriteString(s)
	return b.String()
}

// redactAfterScheme redacts u, a URL without its "scheme://".
func redactAfterScheme(u string) string {
	hier, tail := u, ""
	if k := strings.IndexAny(u, "?#"); k >= 0 {
		hier, tail = u[:k], u[k:]
	}
	auth := hier
	if k := strings.IndexByte(hier, '/'); k >= 0 {
		auth = hier[:k]
	}
	// The last '@' before the query ends the user info even when it is in
	// the path: a password with an unescaped '/' ends the authority early,
	// and leaking it is worse than hiding the host of the rare path that
	// holds an '@'.
	if k := strings.LastIndexByte(hier, '@'); k >= 0 {
		hier = Redacted + hier[k:]
	} else if badPort(auth) {
		// "user:pa?ss@host": what looks like host:port is a credential.
		hier = Redacted + hier[len(auth):]
	}
	var b strings.Builder
	b.WriteString(hier)
	if q, ok := strings.CutPrefix(tail, "?"); ok {
		tail = ""
		if k := strings.IndexByte(q, '#'); k >= 0 {
			q, tail = q[:k], q[k:]
		}
		b.WriteByte('?')
		for i, kv := range strings.Split(q, "&") {
			if i > 0 {
				b.WriteByte('&')
			}
			if key, _, ok := strings.Cut(kv, "="); ok {
				b.WriteString(key + "=" + Redacted)
			} else if kv != "" {
				b.WriteString(Redacted)
			}
		}
	}
	if tail != "" { // a fragment
		b.WriteString("#" + Redacted)
	}
	return b.String()
}

// badPort reports whether an authority has a ':' that no port number
// follows (an IPv6 literal's brackets aside).
func badPort(auth string) bool {
	if k := strings.LastIndexByte(auth, ']'); k >= 0 {
		auth = auth[k+1:]
	}
	k := strings.IndexByte(auth, ':')
	return k >= 0 && strings.Trim(auth[k+1:], "0123456789") != ""
}
