package testcluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSignIn measures the load of a home server's users signing in
// again after an outage: each signs in (NTLM), sets its state and
// subscribes to the presence of 20 buddies, 32 users at a time. One op is
// one user; decisions/s counts every request.
func BenchmarkSignIn(b *testing.B) {
	const users, buddies, parallel = 400, 20, 32
	names := map[string]string{}
	for i := range users {
		names[fmt.Sprintf("u%04d", i)] = "home1"
	}
	c := Start(b, Options{Users: names})
	clients := make([]*Client, users)
	for i := range clients {
		clients[i] = c.Client(b, fmt.Sprintf("u%04d", i))
	}
	var next, requests atomic.Int64
	n := b.N
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				cl := clients[k%users]
				if r := cl.Login(14400); r.Status != 200 {
					b.Errorf("%s login: %d %s", cl.Alias, r.Status, r.Body)
					return
				}
				if r := cl.SetState("online", 1200, 0); r.Status != 207 {
					b.Errorf("%s state: %d %s", cl.Alias, r.Status, r.Body)
					return
				}
				for j := 1; j <= buddies; j++ {
					if r := cl.Watch(fmt.Sprintf("u%04d", (k+j)%users), 14400); r.Status != 207 {
						b.Errorf("%s watch: %d %s", cl.Alias, r.Status, r.Body)
						return
					}
				}
				requests.Add(2 + buddies)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	el := time.Since(start)
	b.ReportMetric(float64(n)/el.Seconds(), "users/s")
	b.ReportMetric(float64(requests.Load())/el.Seconds(), "decisions/s")
}
