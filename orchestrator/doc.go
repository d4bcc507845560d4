// Package orchestrator holds the domain of the retraining orchestrator: mappings from Hugging Face datasets to
// training commands, webhook deliveries and the decisions taken for them, runs and their statuses, and the
// PostgreSQL store that keeps them.
//
// The HTTP side lives in package web, the queue workers and the command runner in package jobs; cmd/orchestrator
// wires them together.
package orchestrator
