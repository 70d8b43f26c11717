package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// addDemoUsers enables user1..userN of the demo domain on the demo home
// server with password (those missing; existing ones are left as they
// are), through the directory's batch operation: 10,000 users take
// seconds, for load tests.
func addDemoUsers(ctx context.Context, js jetstream.JetStream, admin *directory.Admin, n int, password string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	users := make([]directory.NewUser, n)
	for i := range users {
		alias := "user" + strconv.Itoa(i+1)
		u := events.NewUser(demoDomain, alias)
		users[i] = directory.NewUser{
			Spec:      directory.UserSpec{User: u, Home: demoHome, DisplayName: "User " + strconv.Itoa(i+1), Email: alias + "@" + demoDomain},
			Verifiers: rvp.NewVerifiers(u, demoNTDomain, "", demoDomain, password),
		}
	}
	var created int
	err := withDirectory(ctx, js, admin.Directory, log, func() (err error) {
		created, err = admin.EnableUsers(ctx, users)
		return err
	})
	if err != nil {
		return fmt.Errorf("-demo-users %d: %w", n, err)
	}
	log.Info("demo users", "users", fmt.Sprintf("user1..user%d", n), "created", created, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
