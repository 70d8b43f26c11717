package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Cluster is what a cluster's directory stream says of its setup.
type Cluster struct {
	// Created is the record of rvpd init; nil when the cluster was not
	// initialised by it (empty, or set up by rvpd dev).
	Created *events.ClusterCreated
	// Admins are the administrators that exist, by name.
	Admins []string
}

// Initialized reports whether the cluster has been set up: it has
// administrators, so that everything else is done through rvpctl.
func (c Cluster) Initialized() bool { return len(c.Admins) > 0 }

// ReadCluster reads what the directory stream says of the cluster's
// setup, from the stream itself (no projection needed): the record rvpd
// init left, and the administrators. A cluster without the stream is
// empty.
func ReadCluster(ctx context.Context, js jetstream.JetStream) (Cluster, error) {
	var c Cluster
	st, err := js.Stream(ctx, events.StreamDirectory)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read the directory stream %s: %w", events.StreamDirectory, err)
	}
	// From the leader: a replica behind may not have the cluster's record
	// yet, and the cluster would be taken for one never set up.
	st = projections.FromLeader(st)
	if m, err := st.GetLastMsgForSubject(ctx, events.ClusterSubject()); err == nil {
		ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
		if err != nil {
			return c, fmt.Errorf("the cluster's record: %w", err)
		}
		if cc, ok := ev.(*events.ClusterCreated); ok {
			c.Created = cc
		}
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return c, fmt.Errorf("read the cluster's record: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.AdminFilter))
	if err != nil {
		return c, fmt.Errorf("read the administrators: %w", err)
	}
	for subj := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return c, fmt.Errorf("read administrator %s: %w", subj, err)
		}
		ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
		if err != nil {
			return c, fmt.Errorf("administrator %s: %w", subj, err)
		}
		if a, ok := ev.(*events.AdminSet); ok {
			c.Admins = append(c.Admins, a.Name)
		}
	}
	slices.Sort(c.Admins)
	return c, nil
}

// InitSpec is what Init sets up.
type InitSpec struct {
	// Streams are the streams' settings: replicas (3 for a site), lease
	// TTL, retention.
	Streams projections.StreamOptions
	// Admin names the first organisation administrator; Verifier is its
	// password's verifier (NewAdminVerifier).
	Admin    string
	Verifier AdminVerifier
	// Domain and Home, when set, are the first IM domain and home server.
	Domain *DomainSpec
	Home   *HomeServerSpec
	// Actor names who initialised it in the events. Default "rvpd-init".
	Actor  string
	Logger *slog.Logger
}

// ErrInitialized reports a cluster that has been set up already.
var ErrInitialized = errors.New("the cluster is already initialised")

// Init sets up an empty cluster: its streams and KV buckets with the
// settings given, the record of its creation (events.ClusterCreated: the
// cluster key's check and the replicas), the first organisation
// administrator, and optionally the first IM domain and home server.
// Everything else is then done by that administrator through rvpctl.
//
// It refuses (ErrInitialized) a cluster that has administrators, whoever
// set it up; two inits at once cannot both succeed (the record and the
// administrator are appended expecting nothing before them). An init cut
// short after its record and before its administrator may be run again
// with the same cluster key.
func Init(ctx context.Context, js jetstream.JetStream, k *Keyring, spec InitSpec) error {
	if spec.Admin == "" || len(spec.Verifier.Key) == 0 {
		return errors.New("init: the first administrator needs a name and a password")
	}
	if spec.Actor == "" {
		spec.Actor = "rvpd-init"
	}
	log := spec.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := projections.WaitJetStream(ctx, js); err != nil {
		return err
	}
	c, err := ReadCluster(ctx, js)
	if err != nil {
		return err
	}
	if err := checkUninitialized(c, k); err != nil {
		return err
	}
	so := spec.Streams
	so.CreateOnly = false // the administrator's settings, imposed
	if so.Replicas <= 0 {
		so.Replicas = 1
	}
	if err := projections.EnsureStreams(ctx, js, so); err != nil {
		if so.Replicas > 1 {
			return fmt.Errorf("%w (%d replicas need a JetStream cluster of %d servers or more; a single server takes 1)", err, so.Replicas, so.Replicas)
		}
		return err
	}
	log.Info("streams ready", "replicas", so.Replicas)

	db, err := projections.Open("directory", projections.Options{InMemory: true})
	if err != nil {
		return err
	}
	defer db.Close()
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		return err
	}
	a := &Admin{JetStream: js, Directory: dir, Keyring: k, Actor: spec.Actor}
	follow := projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: log}
	return projections.WhileFollowing(ctx, js, follow, dir, func() error {
		if c.Created == nil {
			ev := &events.ClusterCreated{Meta: a.meta(), KeyCheck: k.KeyCheck(), Replicas: so.Replicas}
			if err := a.append(ctx, ev, 0); errors.Is(err, ErrExists) {
				return fmt.Errorf("%w: another rvpd init ran at the same time", ErrInitialized)
			} else if err != nil {
				return err
			}
		}
		err := a.CreateAdmin(ctx, spec.Admin, events.RoleOrganization, nil, spec.Verifier)
		if errors.Is(err, ErrExists) {
			return fmt.Errorf("%w: administrator %s was created meanwhile", ErrInitialized, spec.Admin)
		} else if err != nil {
			return err
		}
		log.Info("organisation administrator created", "admin", spec.Admin)
		if spec.Domain != nil {
			if err := a.CreateDomain(ctx, *spec.Domain); err != nil {
				return err
			}
			log.Info("IM domain created", "domain", spec.Domain.Domain, "im_host", spec.Domain.IMHost)
		}
		if h := spec.Home; h != nil {
			if err := a.CreateHomeServer(ctx, h.Name, h.Host, h.Site, h.HostsUsers); err != nil {
				return err
			}
			log.Info("home server created", "home", h.Name, "host", h.Host)
		}
		return nil
	})
}

// checkUninitialized refuses a cluster that has been set up, saying how.
func checkUninitialized(c Cluster, k *Keyring) error {
	switch {
	case c.Initialized() && c.Created != nil:
		return fmt.Errorf("%w (by %s on %s; administrators: %v): change it with rvpctl as one of them",
			ErrInitialized, c.Created.Actor, c.Created.At.Format("2006-01-02 15:04:05 MST"), c.Admins)
	case c.Initialized():
		return fmt.Errorf("%w (administrators: %v; set up by rvpd dev or an older version): change it with rvpctl as one of them",
			ErrInitialized, c.Admins)
	case c.Created != nil && c.Created.KeyCheck != k.KeyCheck():
		return fmt.Errorf("%w with another cluster key, and its init stopped before its administrator was made: run rvpd init again with that key", ErrInitialized)
	}
	return nil
}

// CheckKey verifies that k is the key the cluster was initialised with,
// when it was by rvpd init: a node with another key would fail every
// sign-in (it cannot open the password verifiers), so it had better not
// start.
func CheckKey(ctx context.Context, js jetstream.JetStream, k *Keyring) error {
	c, err := ReadCluster(ctx, js)
	if err != nil {
		return err
	}
	if c.Created != nil && c.Created.KeyCheck != k.KeyCheck() {
		return fmt.Errorf("the cluster key given (check %s) is not the one this cluster was initialised with (check %s, by %s on %s); give the node the cluster's key file",
			k.KeyCheck(), c.Created.KeyCheck, c.Created.Actor, c.Created.At.Format("2006-01-02"))
	}
	return nil
}
