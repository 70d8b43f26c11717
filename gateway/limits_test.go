package gateway

import (
	"strconv"
	"testing"
	"time"
)

// TestLimiter: a sender's burst goes through, the next message waits
// for the rate, bytes count separately, a refused request charges
// nothing, anonymous addresses get AnonymousFactor times the share, and
// senders do not share buckets.
func TestLimiter(t *testing.T) {
	l := newLimiter(SenderLimits{MessagesPerSecond: 10, MessageBurst: 20, BytesPerSecond: 10_000, ByteBurst: 100_000, AnonymousFactor: 3})
	now := time.Unix(1_000_000, 0)
	for i := range 20 {
		if _, _, ok := l.allow("user alice", false, true, 100, 100, now); !ok {
			t.Fatalf("message %d of a burst of 20 refused", i)
		}
	}
	wait, what, ok := l.allow("user alice", false, true, 100, 100, now)
	if ok || what != "messages per second" || wait != 100*time.Millisecond {
		t.Fatalf("21st message: ok %v, %q, wait %s (want 100ms at 10/s)", ok, what, wait)
	}
	if _, _, ok := l.allow("user alice", false, false, 100, 100, now); !ok {
		t.Error("a request that is no message is refused for messages")
	}
	if _, _, ok := l.allow("user bob", false, true, 100, 100, now); !ok {
		t.Error("bob pays for alice")
	}
	now = now.Add(100 * time.Millisecond)
	if _, _, ok := l.allow("user alice", false, true, 100, 100, now); !ok {
		t.Error("after the wait the message is still refused")
	}

	// Bytes: a burst of 100,000, then the rate; a refused big body
	// charges neither bucket.
	if _, _, ok := l.allow("user carol", false, true, 90_000, 90_000, now); !ok {
		t.Fatal("a body within the burst refused")
	}
	wait, what, ok = l.allow("user carol", false, true, 90_000, 90_000, now)
	if ok || what != "bytes per second" || wait <= 0 {
		t.Fatalf("a second big body: ok %v %q %s", ok, what, wait)
	}
	if got := l.msg["user carol"].tokens; got != 19 {
		t.Errorf("carol's message bucket holds %v, want 19: the refused message was charged", got)
	}

	// Anonymous: three times the share.
	for i := range 60 {
		if _, _, ok := l.allow("addr 192.0.2.1", true, true, 0, 0, now); !ok {
			t.Fatalf("anonymous message %d of 60 refused", i)
		}
	}
	if _, _, ok := l.allow("addr 192.0.2.1", true, true, 0, 0, now); ok {
		t.Error("61st anonymous message accepted")
	}

	// Bytes a day: the bucket holds a day's, refilled over the day; every
	// request body draws on it (the facts keep messages, ACLs and
	// properties).
	d := newLimiter(SenderLimits{BytesPerDay: 86_400_000, AnonymousFactor: 1})
	if _, _, ok := d.allow("user dave", false, true, 85_000_000, 85_000_000, now); !ok {
		t.Fatal("a day's bytes refused")
	}
	if _, _, ok := d.allow("user dave", false, false, 1_000_000, 1_000_000, now); !ok {
		t.Error("an ACL within the day's bytes refused")
	}
	wait, what, ok = d.allow("user dave", false, true, 1_000_000, 1_000_000, now)
	if ok || what != "bytes per day" || wait != 10*time.Minute {
		t.Fatalf("past a day's bytes: ok %v, %q, wait %s (want 10m: 600,000 bytes short at 1,000 a second)", ok, what, wait)
	}
	if _, _, ok := d.allow("user dave", false, true, 1_000_000, 1_000_000, now.Add(10*time.Minute)); !ok {
		t.Error("after the wait the message is still refused")
	}
	if _, _, ok := d.allow("user erin", false, true, 1_000_000, 1_000_000, now); !ok {
		t.Error("erin pays for dave")
	}
	// A flood of senders past maxBuckets forgets what they held, not that
	// dave spent his day.
	later := now.Add(10 * time.Minute)
	for i := range maxBuckets + 10 {
		d.allow("user u"+strconv.Itoa(i), false, true, 100+i%1000, 100+i%1000, later)
	}
	if len(d.day) > maxBuckets {
		t.Errorf("%d day buckets kept, more than %d", len(d.day), maxBuckets)
	}
	if _, _, ok := d.allow("user dave", false, true, 900_000, 900_000, later); ok {
		t.Error("after a flood of senders dave's day was forgotten")
	}
	// Each bucket is judged by its own share: a flood of anonymous
	// senders (ten times the share) does not refill users' at their rate.
	a := newLimiter(SenderLimits{BytesPerDay: 86_400_000, AnonymousFactor: 10})
	a.allow("user dave", false, true, 86_400_000, 86_400_000, now)
	later = now.Add(2 * time.Hour) // dave has 7.2 MB back
	for i := range maxBuckets + 10 {
		a.allow("addr 10.0."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250), true, true, 1_000_000, 1_000_000, later)
	}
	if _, _, ok := a.allow("user dave", false, true, 20_000_000, 20_000_000, later); ok {
		t.Error("after a flood of anonymous senders dave's bucket was refilled at their rate")
	}

	// What a request kept beyond what allow charged (an ACL write's
	// whole ACL, Reply.Kept) is charged after it, below empty if need
	// be: the sender's next request that keeps anything waits for it,
	// a read does not.
	k := newLimiter(SenderLimits{BytesPerDay: 86_400_000, AnonymousFactor: 10})
	if _, _, ok := k.allow("user fay", false, false, 1_000, 1_000, now); !ok {
		t.Fatal("fay's first ACL write refused")
	}
	k.keep("user fay", false, 86_400_000, now)
	wait, what, ok = k.allow("user fay", false, false, 1_000, 1_000, now)
	if ok || what != "bytes per day" || wait != 2*time.Second {
		t.Errorf("after fay kept a day's bytes: ok %v, %q, wait %s (want 2s: 2,000 bytes short at 1,000 a second)", ok, what, wait)
	}
	if _, _, ok := k.allow("user fay", false, false, 100, 0, now); !ok {
		t.Error("a read refused for what fay kept")
	}
	k.keep("addr 192.0.2.9", true, 86_400_000, now)
	if _, _, ok := k.allow("addr 192.0.2.9", true, false, 1_000, 1_000, now); !ok {
		t.Error("an anonymous sender's tenfold share spent by one day's bytes")
	}
	newLimiter(SenderLimits{}).keep("user fay", false, 1<<30, now) // switched off: nothing to charge

	// Switched off.
	off := newLimiter(SenderLimits{})
	for range 10_000 {
		if _, _, ok := off.allow("user x", false, true, 1<<20, 1<<20, now); !ok {
			t.Fatal("limits switched off refuse")
		}
	}
}
