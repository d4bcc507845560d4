// Package jobs runs training commands from the work queue: the River job args and worker for a run, the River
// client that executes them, and the command runner that starts each command in its own process group,
// captures its output and enforces its timeout.
package jobs
