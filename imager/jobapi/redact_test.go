package jobapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"https://host/disk.vmdk", "https://host/disk.vmdk"},
		{"https://user:pass@host/disk.vmdk", "https://REDACTED@host/disk.vmdk"},
		{"https://token@host:8443/x", "https://REDACTED@host:8443/x"},
		{"https://host/x?X-Amz-Signature=abc&X-Amz-Expires=300", "https://host/x?X-Amz-Signature=REDACTED&X-Amz-Expires=REDACTED"},
		{"https://host/x?sv=1;sig=abc", "https://host/x?sv=REDACTED"},
		{"https://host/x?s3cr3t", "https://host/x?REDACTED"},
		{"https://host/x#access_token=abc", "https://host/x#REDACTED"},
		{"https://u:p@host/x?token=t#f", "https://REDACTED@host/x?token=REDACTED#REDACTED"},
		// Unescaped delimiters in a password must not let part of it through.
		{"https://u:pa/ss@host/x", "https://REDACTED@host/x"},
		{"https://u:pa?ss@host/x", "https://REDACTED?REDACTED"},
		{"https://u:pa#ss@host/x", "https://REDACTED#REDACTED"},
		{"http://[::1]:8080/x?a=b", "http://[::1]:8080/x?a=REDACTED"},
		// Go's net/http errors quote the URL; several URLs in one message.
		{`Get "https://u:p@h/x?sig=abc": dial tcp: connection refused`, `Get "https://REDACTED@h/x?sig=REDACTED": dial tcp: connection refused`},
		// Punctuation after a URL goes with it: a ')' may be part of a secret.
		{"imported https://a:b@h/x?t=1 into /dev/sdb (from http://c@g/?k=v)", "imported https://REDACTED@h/x?t=REDACTED into /dev/sdb (from http://REDACTED@g/?k=REDACTED"},
		{"https://u:pa)ss@host/x", "https://REDACTED@host/x"},
		{"no url here: /images/a@b.vmdk", "no url here: /images/a@b.vmdk"},
		{"", ""},
	} {
		got := RedactURL(c.in)
		if got != c.want {
			t.Errorf("RedactURL(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
		if again := RedactURL(got); again != got {
			t.Errorf("RedactURL is not idempotent on %q: %q", got, again)
		}
	}
}

// TestWriteRedactsAndTruncates: the result file never holds a secret (a
// URL early in a message that is then cut, one the cut goes through), and
// the message stays within MaxMessage even when redaction lengthens it.
func TestWriteRedactsAndTruncates(t *testing.T) {
	url := "https://user:hunter2@host/x?sig=s3cr3t"
	for _, msg := range []string{
		url,
		url + " " + strings.Repeat("x", MaxMessage),
		strings.Repeat("x", MaxMessage-30) + " " + url,
		// Under MaxMessage before redaction, over it after.
		strings.Repeat("x", MaxMessage-150) + " " + url + "&" + strings.Repeat("a&", 50),
	} {
		path := filepath.Join(t.TempDir(), "r.json")
		if err := Write(path, &Result{Phase: Failed, Reason: ReasonFailed, Message: msg}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "s3cr3t") {
			t.Fatalf("secret in %s", b)
		}
		r, err := Parse(string(b))
		if err != nil || len(r.Message) > MaxMessage || !strings.Contains(r.Message, "REDACTED") {
			t.Fatalf("%v, message of %d bytes: %.80q", err, len(r.Message), r.Message)
		}
	}
}
