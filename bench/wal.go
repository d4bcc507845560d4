package bench

import (
	"context"
	"fmt"
)

// walUse is what PostgreSQL's pg_stat_wal counted so far: WAL records, full-page images and bytes, for the
// whole cluster (the orchestrator's background work and River's included, as in production).
type walUse struct {
	records, fpi, bytes int64
}

// wal reads pg_stat_wal.
func (e *env) wal(ctx context.Context) (walUse, error) {
	var u walUse
	if err := e.observer.QueryRow(ctx, `SELECT wal_records, wal_fpi, wal_bytes::bigint FROM pg_stat_wal`).
		Scan(&u.records, &u.fpi, &u.bytes); err != nil {
		return walUse{}, fmt.Errorf("read pg_stat_wal: %w", err)
	}
	return u, nil
}

func (u walUse) sub(earlier walUse) walUse {
	return walUse{records: u.records - earlier.records, fpi: u.fpi - earlier.fpi, bytes: u.bytes - earlier.bytes}
}

func (u walUse) add(other walUse) walUse {
	return walUse{records: u.records + other.records, fpi: u.fpi + other.fpi, bytes: u.bytes + other.bytes}
}

// perOp returns the WAL written per operation of n.
func (u walUse) perOp(n int) map[string]float64 {
	if n <= 0 {
		return nil
	}
	f := float64(n)
	return map[string]float64{"records": float64(u.records) / f, "full_page_images": float64(u.fpi) / f, "bytes": float64(u.bytes) / f}
}

// deadlocks reads how many deadlocks PostgreSQL has detected in every database of the cluster so far
// (pg_stat_database), so that a case can report the ones it caused: each costs its transactions
// deadlock_timeout (1 s) of waiting.
func (e *env) deadlocks(ctx context.Context) (int64, error) {
	var n int64
	if err := e.observer.QueryRow(ctx, `SELECT coalesce(sum(deadlocks), 0)::bigint FROM pg_stat_database`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read pg_stat_database: %w", err)
	}
	return n, nil
}
