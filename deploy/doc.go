// Package deploy holds the example deployment of the orchestrator: plain Kubernetes manifests under kubernetes/,
// described in README.md. It has no code; its tests parse the manifests and check that they agree with each other
// and with the orchestrator's configuration.
package deploy
