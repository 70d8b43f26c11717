package directory

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// Prompter reads the secrets an administrator types for the
// administration tools (rvpctl, rvpd init): on a terminal, prompted and
// not echoed; otherwise one line of input each, so that scripts can pipe
// them in. A secret is never taken from the command line, where every
// user of the machine can read it.
type Prompter struct {
	In  io.Reader // standard input
	Out io.Writer // where prompts go: standard error
	buf *bufio.Reader
}

// Terminal reports whether the input is a terminal.
func (p *Prompter) Terminal() bool {
	f, ok := p.In.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Secret reads a secret: prompted on a terminal (twice, when confirm),
// else the next line of input.
func (p *Prompter) Secret(prompt string, confirm bool) (string, error) {
	if p.Terminal() {
		fd := int(p.In.(*os.File).Fd())
		fmt.Fprint(p.Out, prompt+": ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(p.Out)
		if err != nil {
			return "", err
		}
		if confirm {
			fmt.Fprint(p.Out, "again: ")
			b2, err := term.ReadPassword(fd)
			fmt.Fprintln(p.Out)
			if err != nil {
				return "", err
			}
			if string(b) != string(b2) {
				return "", errors.New("the two entries differ")
			}
		}
		return string(b), nil
	}
	if p.buf == nil {
		p.buf = bufio.NewReader(p.In)
	}
	line, err := p.buf.ReadString('\n')
	if err == io.EOF && line == "" {
		return "", fmt.Errorf("%s: none given: standard input is not a terminal and holds no line; give it as one line of standard input, or run this at a terminal to be prompted", prompt)
	}
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("%s: read from standard input: %w", prompt, err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// MinAdminPassword is the shortest password an administrator may have.
const MinAdminPassword = 8

// AdminVerifier reads the password of a new administrator name (twice on
// a terminal) and returns its verifier; the password goes no further.
func (p *Prompter) AdminVerifier(name string) (AdminVerifier, error) {
	pw, err := p.Secret("password of administrator "+name, true)
	if err != nil {
		return AdminVerifier{}, err
	}
	if len(pw) < MinAdminPassword {
		return AdminVerifier{}, fmt.Errorf("a password needs at least %d characters", MinAdminPassword)
	}
	return NewAdminVerifier(pw)
}
