package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Admin writes the directory: it validates an administrative change
// against the directory projection and appends its directory event,
// fenced by the expected last sequence of the aggregate's subject, so two
// administrators changing one aggregate cannot both win. rvpd's bootstrap
// and rvpctl use the same operations.
type Admin struct {
	JetStream jetstream.JetStream
	Directory *Directory
	// Actor names the administrator in the events' audit record.
	Actor string
	Now   func() time.Time
}

// ErrExists reports an aggregate that already exists.
var ErrExists = errors.New("already exists")

func (a *Admin) meta() events.Meta {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	return events.Meta{At: now().UTC(), Actor: a.Actor}
}

// append appends ev expecting its subject's last sequence to be expect,
// and waits until the directory projection has applied it.
func (a *Admin) append(ctx context.Context, ev events.DirectoryEvent, expect uint64) error {
	data, err := events.Encode(ev)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(ev.DirSubject())
	msg.Header.Set(events.HeaderType, ev.Type())
	msg.Data = data
	ack, err := a.JetStream.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(expect))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			if expect == 0 {
				return ErrExists
			}
			return fmt.Errorf("%s changed while this change was made; look again and retry", ev.DirSubject())
		}
		return fmt.Errorf("append %s: %w", ev.Type(), err)
	}
	return a.Directory.WaitFor(ctx, ack.Sequence)
}

// version returns the last sequence of a directory subject, 0 if none.
func (a *Admin) version(ctx context.Context, subject string) (uint64, error) {
	st, err := a.JetStream.Stream(ctx, events.StreamDirectory)
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// CreateDomain creates an IM domain. It fails with ErrExists when the
// domain exists, and when one of its host names already reaches another
// domain.
func (a *Admin) CreateDomain(ctx context.Context, domain, imHost string, emailDomains, hosts []string) error {
	domain, imHost = strings.ToLower(domain), strings.ToLower(imHost)
	if domain == "" || imHost == "" {
		return errors.New("an IM domain needs a name and an IM host (for example example.com and im.example.com)")
	}
	for _, h := range append(append([]string{domain, imHost}, emailDomains...), hosts...) {
		dom, err := a.Directory.DomainByHost(h)
		if err != nil {
			return err
		}
		if dom != nil && dom.Domain != domain {
			return fmt.Errorf("host %s already reaches IM domain %s; choose another host name", h, dom.Domain)
		}
	}
	return a.append(ctx, &events.DomainCreated{Meta: a.meta(), Domain: domain, IMHost: imHost, EmailDomains: emailDomains, Hosts: hosts}, 0)
}

// CreateHomeServer creates a home server.
func (a *Admin) CreateHomeServer(ctx context.Context, name, host, site string, hostsUsers bool) error {
	if name == "" || host == "" {
		return errors.New("a home server needs a name and a host name (for example home1 and imhome1.example.com)")
	}
	return a.append(ctx, &events.HomeServerCreated{Meta: a.meta(), Name: name, Host: strings.ToLower(host), Site: site, HostsUsers: hostsUsers}, 0)
}

// EnableUser enables a user for instant messaging on a home server.
func (a *Admin) EnableUser(ctx context.Context, u events.User, home, displayName, email string) error {
	dom, err := a.Directory.Domain(u.Domain)
	if err != nil {
		return err
	}
	if dom == nil {
		return fmt.Errorf("IM domain %s does not exist; create it first (rvpctl domain create %s)", u.Domain, u.Domain)
	}
	hs, err := a.Directory.HomeServer(home)
	if err != nil {
		return err
	}
	if hs == nil {
		return fmt.Errorf("home server %s does not exist; create it first (rvpctl home create %s)", home, home)
	}
	if !hs.HostsUsers {
		return fmt.Errorf("home server %s does not host user accounts; allow it (rvpctl home allow-users %s) or choose another", home, home)
	}
	ver, err := a.version(ctx, events.UserSubject(u))
	if err != nil {
		return err
	}
	if rec, err := a.Directory.User(u); err != nil {
		return err
	} else if rec != nil && rec.Enabled {
		return fmt.Errorf("%s: %w", u, ErrExists)
	}
	return a.append(ctx, &events.UserEnabled{Meta: a.meta(), User: u, Home: home, DisplayName: displayName, Email: email}, ver)
}
