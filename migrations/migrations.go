// Package migrations holds the orchestrator's database schema as numbered SQL files and applies them, together
// with River's own schema, under one advisory lock so that processes starting at once never race.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed *.sql
var files embed.FS

// VersionTable is the table that records which of our numbered migrations have been applied.
const VersionTable = "orchestrator_schema_version"

// Apply brings the schema in the pool's search_path up to date: first our own tables, then River's. It holds a
// session advisory lock, keyed on the schema name, for the whole time, so a second process calling Apply at the
// same moment waits and then finds nothing left to do.
func Apply(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection for migrations: %w", err)
	}
	defer conn.Release()

	const lockSQL = `SELECT pg_advisory_lock(hashtextextended('orchestrator.migrate.' || current_schema(), 0))`
	if _, err := conn.Exec(ctx, lockSQL); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		// The unlock must run even when ctx is done; a closed session drops the lock anyway.
		_, _ = conn.Exec(context.WithoutCancel(ctx),
			`SELECT pg_advisory_unlock(hashtextextended('orchestrator.migrate.' || current_schema(), 0))`)
	}()

	m, err := newMigrator(ctx, conn)
	if err != nil {
		return err
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("apply orchestrator migrations: %w", err)
	}

	rm, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("create river migrator: %w", err)
	}
	res, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("apply river migrations: %w", err)
	}
	for _, v := range res.Versions {
		logger.InfoContext(ctx, "applied river migration", "version", v.Version, "name", v.Name)
	}
	return nil
}

// Check returns nil when every migration, ours and River's, has been applied, and an error that says what is
// missing otherwise.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()

	m, err := newMigrator(ctx, conn)
	if err != nil {
		return err
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if want := int32(len(m.Migrations)); current != want {
		return fmt.Errorf("schema is at version %d of %d: run `orchestrator migrate`", current, want)
	}

	rm, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("create river migrator: %w", err)
	}
	res, err := rm.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("validate river schema: %w", err)
	}
	if !res.OK {
		return errors.New("river schema is not up to date: run `orchestrator migrate`")
	}
	return nil
}

func newMigrator(ctx context.Context, conn *pgxpool.Conn) (*migrate.Migrator, error) {
	m, err := migrate.NewMigrator(ctx, conn.Conn(), VersionTable)
	if err != nil {
		return nil, fmt.Errorf("create migrator: %w", err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return m, nil
}
