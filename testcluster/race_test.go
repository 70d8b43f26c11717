//go:build race

package testcluster

// raceDetector reports whether the tests run with the race detector, which
// slows everything several times: latency bounds are not held then.
const raceDetector = true
