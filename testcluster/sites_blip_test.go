package testcluster

import (
	"fmt"
	"testing"
	"time"
)

// TestSitesBlip: site b's leaf connection drops and comes back within
// about a second, too short for the site watches to count either site
// lost, and alice (site a) changes her state meanwhile. Her relay to
// carol's home server (site b) finds no responder, past nats.go's
// retries; once the link is back, carol must still see alice's state:
// presence converges after a partition however short. (The watches probe
// every 3 s here, so that the blip is surely too short for them; with the
// production second, a blip of one to two seconds often is.) Before,
// the relay was logged as lost, "its watchers are told again when it is
// reachable", and nobody told them.
func TestSitesBlip(t *testing.T) {
	ss := StartSites(t, SitesOptions{Options: Options{Inside: []string{"10.0.0.0/8"}, RequestTimeout: 5 * time.Second}, WatchEvery: 3 * time.Second,
		Sites: map[string]map[string]string{"a": {"alice": "home1"}, "b": {"carol": "home2"}}})
	a, b := ss.Site("a"), ss.Site("b")
	alice, carol := a.Client(t, "alice"), b.Client(t, "carol")
	for _, u := range []*Client{alice, carol} {
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	// Each watch has found the other site there (its first answer
	// re-sends presence too, before the blip).
	waitSiteUp(t, a, "b")
	waitSiteUp(t, b, "a")
	seen := len(carol.Notifies())

	b.Site().Sever()
	b.Site().WaitSevered()
	severed := time.Now()
	must(t, "alice busy, the link down", alice.SetState("busy", 1200, 0), 207)
	// Past nats.go's retries of a publish with no responder, the relay is
	// lost.
	Eventually(t, 5*time.Second, func() error {
		if st := a.Homes["home1"].Node.Stats(); st.RelaysLost == 0 {
			return fmt.Errorf("alice's relay to carol not lost in the blip (%+v)", st)
		}
		return nil
	})
	b.Site().Heal()
	b.Site().WaitConnected()
	healed := time.Now()
	if blip := healed.Sub(severed); blip > 6*time.Second {
		t.Fatalf("the blip lasted %v, long enough for a watch probing every 3 s to count the site lost: the test tests nothing", blip)
	}
	carol.WaitNotify(seen, 15*time.Second, fromState(alice, "busy"))
	t.Logf("carol saw alice busy %v after the link was back (down %v)", time.Since(healed), healed.Sub(severed))
}
