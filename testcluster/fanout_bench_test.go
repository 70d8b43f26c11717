package testcluster

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// BenchmarkFanout measures one change of presence told to 1,000
// watchers (each signed in with its own callback), against a bare relay
// in the same run: a loop that opens a connection to each callback,
// sends the same NOTIFY, reads the answer and closes, all at once, as
// the protocol forces. One op is one change; it reports the p50 and p99
// of the time from the change (the PROPPATCH sent, or the relay started)
// to each watcher's receipt, and notifications a second, for both.
func BenchmarkFanout(b *testing.B) {
	const watchers = 1000
	users := map[string]string{"star": "home1"}
	for i := range watchers {
		users[fmt.Sprintf("w%04d", i)] = "home1"
	}
	c := Start(b, Options{Users: users})
	star := c.Client(b, "star")
	must := func(what string, r *Response, want int) {
		if r.Status != want {
			b.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	}
	must("star login", star.Login(14400), 200)

	var mu sync.Mutex
	var start time.Time
	var got []time.Duration
	var wake chan struct{}
	record := func(Notify) Answer {
		mu.Lock()
		got = append(got, time.Since(start))
		if len(got) == watchers {
			close(wake)
		}
		mu.Unlock()
		return Answer{Raw: LibrvpAnswer}
	}
	clients := make([]*Client, watchers)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				w := c.Client(b, fmt.Sprintf("w%04d", i))
				if r := w.Login(14400); r.Status != 200 {
					b.Errorf("login: %d", r.Status)
				}
				if r := w.Watch("star", 14400); r.Status != 207 {
					b.Errorf("watch: %d", r.Status)
				}
				clients[i] = w
			}
		}()
	}
	for i := range watchers {
		next <- i
	}
	close(next)
	wg.Wait()
	// Each watcher got her state in its SUBSCRIBE's answer (no NOTIFY for
	// a star that set none); from now on they time NOTIFYs.
	for _, w := range clients {
		w.AnswerWith(record)
	}
	body := rvp.PropNotification(rvp.Contact{Href: star.URL}, rvp.Contact{Href: clients[0].URL}, "busy")
	relay := func() {
		var rw sync.WaitGroup
		for _, w := range clients {
			rw.Add(1)
			go func() {
				defer rw.Done()
				if err := relayNotify(w.CallBack, body); err != nil {
					b.Error(err)
				}
			}()
		}
		rw.Wait()
	}
	round := func(f func()) (p50, p99 time.Duration, rate float64) {
		mu.Lock()
		got, wake, start = got[:0], make(chan struct{}), time.Now()
		done := wake
		mu.Unlock()
		f()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatalf("%d of %d notifications in 30 s", len(got), watchers)
		}
		mu.Lock()
		defer mu.Unlock()
		all := slices.Clone(got)
		slices.Sort(all)
		return all[len(all)/2], all[len(all)*99/100], float64(watchers) / all[len(all)-1].Seconds()
	}
	states := []string{"busy", "online"}
	var rp50, rp99, sp50, sp99 time.Duration
	var rr, sr float64
	n := 0
	for i := 0; b.Loop(); i++ {
		a, p, r := round(relay)
		rp50, rp99, rr = rp50+a, rp99+p, rr+r
		a, p, r = round(func() { must("state", star.SetState(states[i%2], 1200, 0), 207) })
		sp50, sp99, sr = sp50+a, sp99+p, sr+r
		n++
	}
	b.ReportMetric(float64(rp50.Microseconds())/float64(n)/1000, "relay-p50-ms")
	b.ReportMetric(float64(rp99.Microseconds())/float64(n)/1000, "relay-p99-ms")
	b.ReportMetric(rr/float64(n), "relay-notes/s")
	b.ReportMetric(float64(sp50.Microseconds())/float64(n)/1000, "rvpd-p50-ms")
	b.ReportMetric(float64(sp99.Microseconds())/float64(n)/1000, "rvpd-p99-ms")
	b.ReportMetric(sr/float64(n), "rvpd-notes/s")
	b.ReportMetric(sr/rr, "rate-ratio")
	b.ReportMetric(float64(sp99)/float64(rp99), "p99-ratio")
}

// relayNotify is the bare relay's work for one callback: a connection, a
// NOTIFY, its answer's status line, close.
func relayNotify(callback string, body []byte) error {
	u, err := rvp.ParseURL(callback)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	path := u.Path
	if path == "" {
		path = "/"
	}
	req := "NOTIFY " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nRVP-Notifications-Version: 0.2\r\nConnection: close\r\nContent-Type: text/xml\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), body...)); err != nil {
		return err
	}
	_, err = bufio.NewReader(conn).ReadString('\n')
	return err
}
