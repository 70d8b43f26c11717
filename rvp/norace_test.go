//go:build !race

package rvp

const raceDetector = false
