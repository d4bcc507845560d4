package main

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/retrainhq/orchestrator/jobs"
)

// shutdownTimeout bounds the shutdown of a server, beyond the kill grace its running commands get.
const shutdownTimeout = 30 * time.Second

// runServe runs the server until ctx is done, then shuts down gracefully.
func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	opts, err := parseConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	if exe, err := os.Executable(); err == nil {
		opts.Watchdog = []string{exe, jobs.WatchdogCommand}
	}
	svc, err := opts.newService(getenv, stderr)
	if err != nil {
		return err
	}
	cfg := svc.Config()
	if cfg.WebhookSecret == "" {
		return errors.New("HUGGINGFACE_WEBHOOK_SECRET is not set: set it to the secret you entered in the " +
			"webhook's settings on Hugging Face, for example: export HUGGINGFACE_WEBHOOK_SECRET=$(openssl rand -hex 32)")
	}
	if err := svc.Run(ctx); err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = svc.Close(closeCtx)
		return err
	}
	cfg.Logger.Info("orchestrator ready", "addr", svc.Addr(), "role", cfg.Role, "queues", cfg.Queues)
	<-ctx.Done()
	cfg.Logger.Info("shutting down")
	closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout+cfg.KillGrace)
	defer cancel()
	return svc.Close(closeCtx)
}

// runMigrate applies the schema and exits.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	opts, err := parseConfig("migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	svc, err := opts.newService(getenv, stderr)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = svc.Close(closeCtx)
	}()
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	svc.Config().Logger.Info("schema is up to date")
	return nil
}
