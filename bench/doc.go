// Package bench measures the orchestrator end to end and sets each figure beside the limit that bounds it,
// measured in the same run on the same machine.
//
// It starts its own PostgreSQL from the local server binaries (with fsync and synchronous commit on, as in
// production: the figures are compared with durable commits), builds the orchestrator in-process with
// orchestrator/service, as the serve command does and in its default role, drives it over loopback with a Go
// load generator, and also builds the orchestrator binary to measure its footprint as a child process. The
// commit limit is PostgreSQL's own pgbench, run in rounds taken in turn with the ingest figures'. The result is
// one table, every figure beside its limit and its target, printed and written as JSON for later comparison.
//
// Run it with
//
//	go test ./bench/ -run TestBench -v                       # short mode, about two and a half minutes
//	BENCH_MODE=full go test ./bench/ -run TestBench -v -timeout 60m
//
// See docs/BENCHMARKS.md for the figures and what bounds them.
package bench
