// Package service builds the whole orchestrator in one process, as the serve command runs it: the database
// (DATABASE_URL or the embedded PostgreSQL), the pool, the schema, the store and the mappings of the config file,
// the sweeper of leftover processes, the reaper, catch-up with the Hub, the River client and its workers, River's
// UI, the metrics registry, tracing, the web server and the HTTP server with its timeouts; and it shuts them down
// in order. The serve and migrate commands, the end-to-end tests and the benchmark all build it here, so that
// they run the same wiring.
//
//	svc, err := service.New(service.Config{DatabaseURL: url, WebhookSecret: secret, Addr: "127.0.0.1:0"})
//	...
//	if err := svc.Run(ctx); err != nil { ... }  // returns once the server accepts connections
//	defer svc.Close(closeCtx)                    // stops everything, in order
package service
