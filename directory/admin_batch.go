package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// NewUser is a user for EnableUsers: what EnableUser takes, and the
// verifiers SetPassword would record (none: the user has no password
// yet).
type NewUser struct {
	Spec      UserSpec
	Verifiers rvp.Verifiers
}

// enableBatch bounds the appends EnableUsers has in flight.
const enableBatch = 1000

// EnableUsers enables many users and sets their passwords: the events
// EnableUser and SetPassword append, checked the same way and fenced the
// same way (a user's subject must be empty when it is enabled, and its
// password follows the enabling), but published asynchronously, up to
// enableBatch at a time, with one wait for the directory projection at the
// end. Users the directory knows already are left as they are. It returns
// how many it enabled; on an error, naming the first user it failed for,
// those enabled stay enabled (with their passwords, where these were
// stored) and are in the projection.
func (a *Admin) EnableUsers(ctx context.Context, users []NewUser) (int, error) {
	var undone []events.User
	n, err := a.enableUsers(ctx, users, func(int, error) {}, func(i int, _ error) { undone = append(undone, users[i].Spec.User) })
	if err == nil && len(undone) > 0 {
		err = fmt.Errorf("%d users (%s first) disabled again: their home server or IM domain was deleted while they were enabled", len(undone), undone[0])
	}
	return n, err
}

// hasPassword reports whether v are a password's verifiers (not none).
func hasPassword(v rvp.Verifiers) bool { return v.NT != nil || len(v.HA1) > 0 }

// enableUsers is EnableUsers, telling enabled the index of each user it
// enabled (its user.enabled acknowledged), with why its password was not
// set (nil when it was, or when it was given none), and undone the index
// of each user it enabled and then disabled again, with why (see
// undoDeleted); those are not counted.
func (a *Admin) enableUsers(ctx context.Context, users []NewUser, enabled func(i int, pwErr error), undone func(i int, err error)) (int, error) {
	if a.Keyring == nil {
		return 0, errors.New("no cluster key: passwords cannot be stored")
	}
	// The IM domains and home servers are checked on the directory as the
	// stream has it, not on a projection behind it.
	if err := a.caughtUp(ctx, events.DirectoryFilter); err != nil {
		return 0, err
	}
	checked := map[string]error{}
	var todo []int
	for i, nu := range users {
		// Lower-case, as EnableUser keeps them.
		u := events.NewUser(nu.Spec.User.Domain, nu.Spec.User.Alias)
		users[i].Spec.User, nu.Spec.User = u, u
		if err := checkAlias(u); err != nil {
			return 0, err
		}
		if err, ok := checked[u.Domain+"\x00"+nu.Spec.Home]; !ok {
			err = a.checkDomainHome(u.Domain, nu.Spec.Home)
			checked[u.Domain+"\x00"+nu.Spec.Home] = err
			if err != nil {
				return 0, err
			}
		}
		if hasPassword(nu.Verifiers) && (len(nu.Verifiers.NT) != 16 || len(nu.Verifiers.HA1) == 0) {
			return 0, fmt.Errorf("%s: password verifiers are incomplete", u)
		}
		if rec, err := a.Directory.User(u); err != nil {
			return 0, err
		} else if rec != nil {
			continue
		}
		todo = append(todo, i)
	}
	created := 0
	var last uint64
	// made holds each user enabled and the sequence of its last event.
	type madeUser struct {
		ui  int
		seq uint64
	}
	var made []madeUser
	// failed is the first failure: no batch starts after it, but every
	// append started is awaited and told, so that a user enabled is never
	// reported as not, nor one enabled without its password as whole.
	var failed error
	fail := func(err error) {
		if failed == nil {
			failed = err
		}
	}
	for len(todo) > 0 && failed == nil {
		n := min(len(todo), enableBatch)
		batch := todo[:n]
		todo = todo[n:]
		acks := make([]jetstream.PubAckFuture, 0, n)
		for _, ui := range batch {
			s := users[ui].Spec
			f, err := a.publishAsync(ctx, &events.UserEnabled{Meta: a.meta(), User: s.User, Home: s.Home, DisplayName: s.DisplayName, Email: s.Email, NTAccount: s.NTAccount}, 0)
			if err != nil {
				fail(fmt.Errorf("enable %s: %w", s.User, err))
				break
			}
			acks = append(acks, f)
		}
		type password struct {
			ui   int
			made int // its index in made
			f    jetstream.PubAckFuture
			err  error
		}
		var passwords []password
		for i, f := range acks {
			ui := batch[i]
			nu := users[ui]
			ack, err := awaitAck(ctx, f)
			if err != nil {
				if !isWrongLastSequence(err) { // else enabled meanwhile by someone else: left as it is
					fail(fmt.Errorf("enable %s: %w", nu.Spec.User, err))
				}
				continue
			}
			created++
			last = max(last, ack.Sequence)
			made = append(made, madeUser{ui: ui, seq: ack.Sequence})
			p := password{ui: ui, made: len(made) - 1}
			if hasPassword(nu.Verifiers) {
				var sealed []byte
				if sealed, p.err = a.Keyring.SealVerifiers(nu.Verifiers, events.UserSubject(nu.Spec.User)); p.err == nil {
					p.f, p.err = a.publishAsync(ctx, &events.PasswordSet{Meta: a.meta(), User: nu.Spec.User, Verifiers: sealed}, ack.Sequence)
				}
			}
			passwords = append(passwords, p)
		}
		for _, p := range passwords {
			if p.f != nil {
				var ack *jetstream.PubAck
				if ack, p.err = awaitAck(ctx, p.f); p.err == nil {
					last = max(last, ack.Sequence)
					made[p.made].seq = ack.Sequence
				}
			}
			if p.err != nil {
				fail(fmt.Errorf("%s is enabled, but its password was not set: %w (set it with rvpctl password set %s)", users[p.ui].Spec.User, p.err, users[p.ui].Spec.User))
			}
			enabled(p.ui, p.err)
		}
	}
	if last != 0 {
		if err := a.Directory.WaitFor(ctx, last); err != nil {
			fail(err)
			return created, failed
		}
	}
	// undoDeleted: the users' appends are fenced by their own subjects
	// only, and a deletion of their home server or IM domain by the
	// users' events: one appended between this import's check and its
	// appends saw none of them and succeeded, and so did the import,
	// leaving users on a home server (or in a domain) that no longer
	// exists. The projection, at the import's last event now, has any
	// such deletion: those users are disabled again.
	gone := map[string]bool{}
	for _, m := range made {
		s := users[m.ui].Spec
		key := s.User.Domain + "\x00" + s.Home
		deleted, ok := gone[key]
		if !ok {
			dom, err := a.Directory.Domain(s.User.Domain)
			if err != nil {
				fail(err)
				break
			}
			hs, err := a.Directory.HomeServer(s.Home)
			if err != nil {
				fail(err)
				break
			}
			deleted = dom == nil || hs == nil
			gone[key] = deleted
		}
		if !deleted {
			continue
		}
		why := fmt.Errorf("home server %s or IM domain %s was deleted while %s was enabled", s.Home, s.User.Domain, s.User)
		if err := a.append(ctx, &events.UserDisabled{Meta: a.meta(), User: s.User}, m.seq); err != nil {
			// Refused because the user changed since the import enabled
			// it (fenced by its event): an administrator who moved it,
			// or disabled it, meanwhile did so on purpose, and the user
			// is left as they did. Still enabled where it was imported
			// (its record written afresh), it is reported.
			if fixed, ferr := a.fixedMeanwhile(ctx, s); ferr == nil && fixed {
				continue
			}
			fail(fmt.Errorf("%s: %w, and disabling it again failed: %w (rvpctl user disable %s)", s.User, why, err, s.User))
			continue
		}
		created--
		undone(m.ui, why)
	}
	return created, failed
}

// publishAsync starts the append of ev expecting its subject's last
// sequence to be expect.
func (a *Admin) publishAsync(ctx context.Context, ev events.DirectoryEvent, expect uint64) (jetstream.PubAckFuture, error) {
	msg, err := directoryMsg(ev)
	if err != nil {
		return nil, err
	}
	f, err := a.JetStream.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(expect))
	if err != nil {
		return nil, fmt.Errorf("append %s: %w", ev.Type(), err)
	}
	return f, nil
}

func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// directoryMsg is the message that appends ev.
func directoryMsg(ev events.DirectoryEvent) (*nats.Msg, error) {
	data, err := events.Encode(ev)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(ev.DirSubject())
	msg.Header.Set(events.HeaderType, ev.Type())
	msg.Data = data
	return msg, nil
}

// isWrongLastSequence reports a failed expectation of a subject's last
// sequence (both of JetStream's codes for it).
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// checkAlias refuses an alias no RVP URL can carry: what the gateway
// refuses in a request's path (rvp.ParseNodePath: a control character,
// a space, '/', DEL, more than rvp.MaxAliasLen bytes, not UTF-8), and
// '@' and '\\'. An alias given not UTF-8 is lower-cased (events.NewUser)
// into replacement characters, which it refuses: any other bytes that are
// not UTF-8 would have named the same user.
func checkAlias(u events.User) error {
	if !utf8.ValidString(u.Alias) || strings.ContainsRune(u.Alias, utf8.RuneError) {
		return fmt.Errorf("user %q: an alias is UTF-8 text", u.Alias)
	}
	bad := u.Alias == "" || strings.ContainsAny(u.Alias, "/@\\\x7f")
	for i := 0; i < len(u.Alias) && !bad; i++ {
		bad = u.Alias[i] <= ' '
	}
	if bad {
		return fmt.Errorf("user %q: an alias has no '/', '@', '\\', spaces or control characters", u.Alias)
	}
	if len(u.Alias) > rvp.MaxAliasLen {
		return fmt.Errorf("user %q: an alias has at most %d bytes", u.Alias, rvp.MaxAliasLen)
	}
	return nil
}

// checkDomainHome returns an error naming the fix when users of domain
// cannot be homed on home.
func (a *Admin) checkDomainHome(domain, home string) error {
	dom, err := a.Directory.Domain(domain)
	if err != nil {
		return err
	}
	if dom == nil {
		return fmt.Errorf("IM domain %s does not exist; create it first (rvpctl domain create %s -im-host im.%s)", domain, domain, domain)
	}
	return a.checkHome(home)
}

// ImportUsers enables the users of an import (rvpctl user import) with
// their passwords, through enableUsers, and says what became of each:
// created (with an Error when its password could not be set: it is
// enabled, without one); exists (an enabled user already, left as it is,
// password included, with what the directory holds otherwise); or
// refused, with
// why: a bad alias, an IM domain allowed(domain) refuses (a domain
// administrator's others), a home server that cannot host it, a disabled
// user, a user given twice. A refused user does not stop the others, and
// importing the same users again changes nothing. A dry run says what
// would become of each and changes nothing.
func (a *Admin) ImportUsers(ctx context.Context, s ImportSpec, allowed func(domain string) error) ([]ImportResult, error) {
	if len(s.Users) > MaxImport {
		return nil, fmt.Errorf("%d users in one import request: at most %d", len(s.Users), MaxImport)
	}
	if err := a.caughtUp(ctx, events.DirectoryFilter); err != nil {
		return nil, err
	}
	results := make([]ImportResult, len(s.Users))
	homes := map[string]error{}
	seen := map[events.User]bool{}
	var todo []NewUser
	var at []int // the index in s.Users of each of todo
	for i, iu := range s.Users {
		// Lower-case, as EnableUser keeps them: looked up as sent, a
		// disabled user written otherwise was found by enableUsers only,
		// and reported as existing.
		u := events.NewUser(iu.Spec.User.Domain, iu.Spec.User.Alias)
		iu.Spec.User = u
		refuse := func(err error) { results[i] = ImportResult{Outcome: ImportRefused, Error: err.Error()} }
		if err := checkAlias(u); err != nil {
			refuse(err)
			continue
		}
		if err := allowed(u.Domain); err != nil {
			refuse(err)
			continue
		}
		key := u.Domain + "\x00" + iu.Spec.Home
		err, ok := homes[key]
		if !ok {
			err = a.checkDomainHome(u.Domain, iu.Spec.Home)
			homes[key] = err
		}
		if err != nil {
			refuse(err)
			continue
		}
		var v rvp.Verifiers
		if iu.Verifiers != nil {
			if v = *iu.Verifiers; len(v.NT) != 16 || len(v.HA1) == 0 {
				refuse(fmt.Errorf("%s: password verifiers are incomplete", u))
				continue
			}
		}
		if seen[u] {
			refuse(fmt.Errorf("%s is given twice", u))
			continue
		}
		seen[u] = true
		rec, err := a.Directory.User(u)
		if err != nil {
			return nil, err
		}
		switch {
		case rec != nil && !rec.Enabled:
			refuse(fmt.Errorf("%s was disabled; enable it again with rvpctl user enable %s -home %s", u, u, iu.Spec.Home))
		case rec != nil:
			results[i] = ImportResult{Outcome: ImportExists, Differs: differs(rec.Home, rec.DisplayName, rec.Email, rec.NTAccount, iu.Spec)}
		default:
			results[i] = ImportResult{Outcome: ImportCreated}
			todo, at = append(todo, NewUser{Spec: iu.Spec, Verifiers: v}), append(at, i)
		}
	}
	if s.DryRun || len(todo) == 0 {
		return results, nil
	}
	created := make([]bool, len(todo))
	pwErrs := make([]error, len(todo))
	undone := make([]error, len(todo))
	_, err := a.enableUsers(ctx, todo, func(j int, pwErr error) { created[j], pwErrs[j] = true, pwErr },
		func(j int, why error) { undone[j] = why })
	for j, i := range at {
		switch {
		case undone[j] != nil:
			results[i] = ImportResult{Outcome: ImportRefused, Error: fmt.Sprintf("enabled, then disabled again: %v", undone[j])}
		case created[j] && pwErrs[j] != nil:
			// Enabled, so not refused; importing again would say it exists.
			u := todo[j].Spec.User
			results[i].Error = fmt.Sprintf("enabled, but its password was not set: %v; set it with rvpctl password set %s", pwErrs[j], u)
		case created[j]:
		case err != nil:
			results[i] = ImportResult{Outcome: ImportRefused, Error: notImported(err)}
		default:
			results[i] = a.changedMeanwhile(ctx, todo[j].Spec)
		}
	}
	return results, nil
}

// changedMeanwhile says what became of user s.User, unknown when the
// import checked it, that another administrator enabled before the
// import's append (refused): what the directory holds of it now. Reported
// "exists" whatever that was, a user enabled and disabled again meanwhile
// was taken for imported.
func (a *Admin) changedMeanwhile(ctx context.Context, s UserSpec) ImportResult {
	u := s.User
	if _, err := a.current(ctx, events.UserSubject(u)); err != nil {
		return ImportResult{Outcome: ImportRefused, Error: fmt.Sprintf("not enabled: another administrator changed %s meanwhile, and the directory could not be read (%v); look (rvpctl user show %s)", u, err, u)}
	}
	rec, err := a.Directory.User(u)
	switch {
	case err != nil:
		return ImportResult{Outcome: ImportRefused, Error: fmt.Sprintf("not enabled: another administrator changed %s meanwhile, and the directory could not be read (%v); look (rvpctl user show %s)", u, err, u)}
	case rec == nil:
		return ImportResult{Outcome: ImportRefused, Error: fmt.Sprintf("not enabled: another administrator changed %s meanwhile; import again", u)}
	case !rec.Enabled:
		return ImportResult{Outcome: ImportRefused, Error: fmt.Sprintf("%s was enabled and disabled again by another administrator meanwhile; enable it again with rvpctl user enable %s -home %s", u, u, s.Home)}
	}
	return ImportResult{Outcome: ImportExists, Differs: differs(rec.Home, rec.DisplayName, rec.Email, rec.NTAccount, s)}
}

// differs lists what a user's directory record holds otherwise than an
// import gives it (what the import gives, that is).
func differs(home, name, email, nt string, s UserSpec) []string {
	var out []string
	for _, f := range []struct{ what, have, given string }{
		{"home server", home, s.Home}, {"display name", name, s.DisplayName}, {"e-mail", email, s.Email}, {"Windows account", nt, s.NTAccount},
	} {
		if f.given != "" && f.given != f.have {
			out = append(out, fmt.Sprintf("%s %q", f.what, f.have))
		}
	}
	return out
}

// fixedMeanwhile reports whether user s.User, imported on home server
// s.Home of an IM domain or home server deleted meanwhile, is no longer
// enabled there: disabled, or moved, by an administrator since, or its
// home server and IM domain exist again.
func (a *Admin) fixedMeanwhile(ctx context.Context, s UserSpec) (bool, error) {
	if _, err := a.current(ctx, events.UserSubject(s.User)); err != nil {
		return false, err
	}
	rec, err := a.Directory.User(s.User)
	if err != nil {
		return false, err
	}
	if rec == nil || !rec.Enabled || rec.Home != s.Home {
		return true, nil
	}
	// Or its home server and IM domain made again.
	dom, err := a.Directory.Domain(s.User.Domain)
	if err != nil {
		return false, err
	}
	hs, err := a.Directory.HomeServer(s.Home)
	if err != nil {
		return false, err
	}
	return dom != nil && hs != nil, nil
}

// notImported says why a user of an import that stopped was not
// enabled: the error it stopped at (which names the user it was
// enabling then, not necessarily this one), and what to do.
func notImported(err error) string {
	if NoRoom(err) {
		return fmt.Sprintf("not enabled: the import stopped, JetStream storage being full (%v); make room or raise the limit (docs/operations.md, \"Storage is filling\"), then import again: what was done stays done", err)
	}
	return fmt.Sprintf("not enabled: the import stopped (%v); import again: what was done stays done", err)
}

// NoRoom reports whether err is JetStream refusing a write for want of
// storage: the account's limit (10002), the servers' (10023), or the
// file or memory store's (10047, 10028).
func NoRoom(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10002, 10023, 10047, 10028:
		return true
	}
	return false
}
