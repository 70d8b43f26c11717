//go:build race

package rvp

// raceDetector reports whether the tests run with the race detector, under
// which escape analysis keeps fewer values on the stack.
const raceDetector = true
