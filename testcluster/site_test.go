package testcluster

import (
	"testing"
)

// TestClusterSite runs the deployment DESIGN §6 gives a site: three NATS
// servers with R3 streams, two home nodes per home server (owner and
// standby), two gateways and a router; users on two home servers see
// each other and exchange messages.
func TestClusterSite(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Gateways: 2, Routers: 1,
		Inside: []string{"127.0.0.0/8"}, NATS: &NATSClusterOptions{}, Standbys: 1})
	twoHomes(t, c, true)
	names := c.JS.StreamNames(t.Context())
	n := 0
	for name := range names.Name() {
		n++
		st, err := c.JS.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas (cluster %+v), want 3", name, info.Config.Replicas, info.Cluster)
		}
	}
	if err := names.Err(); err != nil || n < 5 {
		t.Errorf("%d streams (%v)", n, err)
	}
	for _, h := range []string{"home1", "home2"} {
		if o := c.Owner(h); o != h+"-a" {
			t.Errorf("home server %s owned by %q, want %s-a", h, o, h)
		}
	}
}
