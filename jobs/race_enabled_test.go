//go:build race

package jobs_test

// raceEnabled tells the tests that the race detector slows every instruction down.
const raceEnabled = true
