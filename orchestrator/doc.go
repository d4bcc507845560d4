// Package orchestrator holds the domain of the retraining orchestrator: mappings from Hugging Face datasets to
// training commands, webhook deliveries and the decisions taken for them, runs and their statuses, and the
// PostgreSQL store that keeps them.
//
// The Hub's payload and API live in package orchestrator/hub, the HTTP side in package web, the queue workers and
// the command runner in package jobs; orchestrator/service wires them together. docs/ARCHITECTURE.md is the map.
package orchestrator
