package controllers

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// newBlocker bounds what it copies from pods and events, keeps it valid
// UTF-8, and never lets credentials in a URL through.
func TestNewBlockerBoundsAndRedacts(t *testing.T) {
	long := strings.Repeat("é", maxBlockerMessage) + " https://user:secret@example.com/disk.vmdk"
	b := newBlocker("X", "pod p: %s", long)
	if len(b.message) > maxBlockerMessage+3 || !utf8.ValidString(b.message) {
		t.Fatalf("message of %d bytes, valid UTF-8 %v", len(b.message), utf8.ValidString(b.message))
	}
	b = newBlocker("X", "pull https://user:secret@example.com/disk.vmdk failed")
	if strings.Contains(b.message, "secret") {
		t.Fatalf("credentials kept: %q", b.message)
	}
}
