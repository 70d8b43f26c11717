package directory

import (
	"strings"
	"testing"
)

// TestPrompterNoInput: with standard input neither a terminal nor holding
// a line (rvpctl password set < /dev/null, a script that forgot to pipe
// the password in), the error says what was asked and how to give it,
// not only "EOF".
func TestPrompterNoInput(t *testing.T) {
	p := &Prompter{In: strings.NewReader("")}
	_, err := p.Secret("new password of dave@example.test", false)
	if err == nil {
		t.Fatal("no input: no error")
	}
	for _, want := range []string{"new password of dave@example.test", "one line of standard input", "terminal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// A line without its newline is a password all the same.
	p = &Prompter{In: strings.NewReader("a-long-secret")}
	if pw, err := p.Secret("password", false); err != nil || pw != "a-long-secret" {
		t.Errorf("a last line without newline: %q, %v", pw, err)
	}
}
