package projections

import (
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// TestEnabledUserOn: the index of enabled users by home server follows
// enabling, moves, disables and enabling again elsewhere, in one batch
// and across batches, and is loaded again when the projection is opened.
func TestEnabledUserOn(t *testing.T) {
	path := t.TempDir()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	apply := func(evs ...events.Event) {
		t.Helper()
		var msgs []Msg
		for _, ev := range evs {
			data, err := events.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, Msg{Seq: dir.Position() + uint64(len(msgs)) + 1, Type: ev.Type(), Data: data})
		}
		if err := dir.ApplyBatch(msgs); err != nil {
			t.Fatal(err)
		}
	}
	want := func(home string, u events.User) {
		t.Helper()
		rec, err := dir.EnabledUserOn(home)
		switch {
		case err != nil:
			t.Fatal(err)
		case u.IsZero() && rec != nil:
			t.Errorf("%s hosts %s, want none", home, rec.User)
		case !u.IsZero() && (rec == nil || rec.User != u):
			t.Errorf("%s hosts %+v, want %s", home, rec, u)
		}
	}
	apply(&events.UserEnabled{User: ann, Home: "h1"}, &events.UserEnabled{User: ben, Home: "h1"}, &events.UserMoved{User: ann, From: "h1", Home: "h2"})
	want("h1", ben)
	want("h2", ann)
	apply(&events.UserDisabled{User: ben})
	want("h1", events.User{})
	apply(&events.UserEnabled{User: ben, Home: "h2"}, &events.UserDisabled{User: ann})
	want("h2", ben)
	want("h1", events.User{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if dir, err = OpenDirectory(db); err != nil {
		t.Fatal(err)
	}
	want("h2", ben)
	apply(&events.UserEnabled{User: ann, Home: "h1"})
	want("h1", ann)
	if err := dir.Reset(); err != nil {
		t.Fatal(err)
	}
	want("h1", events.User{})
	want("h2", events.User{})
}
