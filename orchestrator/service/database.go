package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
)

// connectTimeoutDefault bounds one connection attempt when DATABASE_URL sets no connect_timeout.
const connectTimeoutDefault = 3 * time.Second

// poolSize is how many connections the pool holds for a process running maxWorkers commands at once: enough for
// concurrent webhooks plus one per worker and River's own.
func poolSize(maxWorkers int) int32 { return int32(max(16, 2*maxWorkers+8)) }

// Migrate connects to the database, starting the embedded PostgreSQL when DatabaseURL is empty, and brings its
// schema up to date, which is all the migrate command does. Close releases what it opened.
func (s *Service) Migrate(ctx context.Context) error { return s.openDatabase(ctx) }

// openDatabase connects to DatabaseURL, or starts the embedded PostgreSQL, and applies the schema.
func (s *Service) openDatabase(ctx context.Context) error {
	cfg, logger := &s.config, s.config.Logger
	url := cfg.DatabaseURL
	if url == "" {
		dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "postgres"))
		if err != nil {
			return fmt.Errorf("resolve data dir: %w", err)
		}
		// The data dir itself stays traversable, so that the server's own user (when we run as root) reaches
		// the cluster directory inside it; the cluster directory is private to that user.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		logger.Info("DATABASE_URL is unset: starting the embedded PostgreSQL", "dir", dir)
		s.cluster, err = pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Logger: logger})
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		url = s.cluster.URL()
	}
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	poolCfg.MaxConns = poolSize(cfg.MaxWorkers)
	if poolCfg.ConnConfig.ConnectTimeout == 0 {
		poolCfg.ConnConfig.ConnectTimeout = connectTimeoutDefault
	}
	if cfg.PoolTracer != nil {
		poolCfg.ConnConfig.Tracer = cfg.PoolTracer
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	if err := migrations.Apply(ctx, s.pool, logger); err != nil {
		return err
	}
	return nil
}

// ready reports whether the database answers and the schema is complete.
func (s *Service) ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	return migrations.Check(ctx, s.pool)
}
