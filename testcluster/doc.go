// Package testcluster is what tests and benchmarks build on: simulated RVP
// clients that speak to a server over real HTTP on loopback and run their
// own callback listeners, polling helpers that wait on conditions with a
// deadline instead of sleeping, and (as the deployment grows) in-process
// clusters of NATS servers and roles with fault injection.
//
// It may import every package of the module; nothing but tests imports it.
package testcluster
