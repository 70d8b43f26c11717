package directory

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestNotImportedSaysWhy: an import that stopped at an error said, for
// each user after it, "not enabled: enable user8500: nats: API error:
// ... resource limits exceeded for account (import again: ...)" — every
// row naming the one user it stopped at, and "import again" while the
// storage was still full (helper-72's drill, at an account's JetStream
// limit). The row now says the import stopped, and, when JetStream
// refused the write for want of storage, where to make room first.
func TestNotImportedSaysWhy(t *testing.T) {
	full := fmt.Errorf("enable example.test/user8500: %w", &jetstream.APIError{Code: 400, ErrorCode: 10002, Description: "resource limits exceeded for account"})
	if !NoRoom(full) {
		t.Errorf("NoRoom(%v) = false", full)
	}
	got := notImported(full)
	for _, want := range []string{"not enabled: the import stopped", "storage being full", "Storage is filling", "import again"} {
		if !strings.Contains(got, want) {
			t.Errorf("row of a user after an import stopped at full storage: %q; want it to say %q", got, want)
		}
	}
	for _, code := range []jetstream.ErrorCode{10023, 10047, 10028} {
		if err := fmt.Errorf("x: %w", &jetstream.APIError{Code: 503, ErrorCode: code}); !NoRoom(err) {
			t.Errorf("NoRoom(err_code %d) = false", code)
		}
	}
	other := fmt.Errorf("enable example.test/user8500: %w", errors.New("nats: timeout"))
	if NoRoom(other) {
		t.Errorf("NoRoom(%v) = true", other)
	}
	if got := notImported(other); !strings.HasPrefix(got, "not enabled: the import stopped (") || strings.Contains(got, "Storage") {
		t.Errorf("row of a user after an import stopped at a timeout: %q", got)
	}
}
