package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"time"
)

// machine is what this machine made of two fixed pieces of work at the
// start of a run. Ratios to the relay do not move with the machine; the
// absolute figures (seconds for 10,000 users signing in, facts rebuilt a
// second) do, and on the shared machines this runs on they have moved by
// a factor of two from one day to the next with the same code
// (docs/performance.md, "This machine, measured"). The report prints
// these two beside them.
type machine struct {
	// encode is one encoding/json encode of a fixed value: the CPUs'
	// speed, for work that does not change with rvpd's code.
	encode time.Duration
	// freshPage is the first write to a 4 KiB page just mapped: what new
	// memory costs (under 1 µs on ordinary hardware; 10-15 µs on the VM
	// docs/performance.md measured, even for pages just given back).
	freshPage time.Duration
}

func (m machine) String() string {
	return fmt.Sprintf("encoding/json %.2f µs a value (the CPUs), a fresh 4 KiB page %.2f µs (new memory)",
		float64(m.encode.Nanoseconds())/1e3, float64(m.freshPage.Nanoseconds())/1e3)
}

// measureMachine takes the best of five tries of each, so that a moment
// of another process's work counts as little as it can.
func measureMachine() (machine, error) {
	var m machine
	for i := range 5 {
		e := measureEncode()
		p, err := measureFreshPage(16 << 20)
		if err != nil {
			return machine{}, err
		}
		if i == 0 || e < m.encode {
			m.encode = e
		}
		if i == 0 || p < m.freshPage {
			m.freshPage = p
		}
	}
	return m, nil
}

// calibration is the value encoded: a subscription fact's shape.
type calibration struct {
	ID         int32             `json:"id"`
	User       string            `json:"user"`
	Target     string            `json:"target"`
	Kind       string            `json:"kind"`
	CallBack   string            `json:"call_back"`
	Lifetime   int               `json:"lifetime"`
	Expires    time.Time         `json:"expires"`
	Properties []string          `json:"properties"`
	Headers    map[string]string `json:"headers"`
}

func measureEncode() time.Duration {
	v := calibration{ID: 4711, User: "user1@example.test", Target: "user2@example.test", Kind: "update/propchange",
		CallBack: "http://10.1.2.3:6801/instmsg/aliases/user1", Lifetime: 14400, Expires: time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC),
		Properties: []string{"state", "mobile-state", "display-name"}, Headers: map[string]string{"RVP-Notifications-Version": "0.2"}}
	const n = 2000
	start := time.Now()
	for range n {
		if _, err := json.Marshal(&v); err != nil {
			panic(err) // a fixed value of plain types
		}
	}
	return time.Since(start) / n
}

// measureFreshPage maps size bytes and writes to each page once.
func measureFreshPage(size int) (time.Duration, error) {
	const page = 4096
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("measure new memory: map %d bytes: %w", size, err)
	}
	defer syscall.Munmap(b)
	start := time.Now()
	for i := 0; i < size; i += page {
		b[i] = 1
	}
	return time.Since(start) / time.Duration(size/page), nil
}
