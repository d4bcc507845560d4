// Package api is the JSON API's representation of mappings, runs, attempts, notifications and deliveries, with
// the envelopes and the error body of its answers: what the server in package web encodes and what the command
// line decodes, from the same types.
//
// A run, an attempt and a delivery are shown as their types in package orchestrator encode. A mapping and a
// notification have types of their own here: the API shows durations in Go's syntax and never a notify target's
// full URL, since a Slack URL carries its own secret. A request that creates or replaces a mapping carries an
// orchestrator.MappingSpec, the settings as the configuration file writes them too.
package api
