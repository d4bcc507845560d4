// Package web is the orchestrator's HTTP side: the Hugging Face webhook, the JSON API, the server-rendered
// status pages and the health checks. Errors from the domain are mapped to HTTP statuses in one place
// (error.go).
package web
