//go:build race

package bench

// RaceEnabled reports whether the race detector is on: the figures of such a build mean nothing.
const RaceEnabled = true
