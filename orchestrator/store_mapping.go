package orchestrator

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

const mappingColumns = `id, name, dataset, refs, command, workdir, env, timeout_ms, max_attempts, source, enabled,
	created_at, updated_at`

func scanMapping(row pgx.Row) (*Mapping, error) {
	var m Mapping
	var timeoutMS int64
	if err := row.Scan(&m.ID, &m.Name, &m.Dataset, &m.Refs, &m.Command, &m.Workdir, &m.Env, &timeoutMS,
		&m.MaxAttempts, &m.Source, &m.Enabled, &m.CreatedAt, &m.UpdatedAt); err != nil {
		return nil, err
	}
	m.Timeout = time.Duration(timeoutMS) * time.Millisecond
	return &m, nil
}

// MappingSyncResult counts what MappingSync changed.
type MappingSyncResult struct {
	Upserted int
	Disabled []string
}

// MappingSync makes the database agree with the mappings declared in the configuration file: each is inserted
// or updated by name (and enabled), and every file mapping that is no longer declared is disabled, never
// deleted, so that its run history stays. Mappings created through the API are left alone unless the file
// names them, in which case the file takes them over.
func (s *Store) MappingSync(ctx context.Context, mappings []Mapping) (*MappingSyncResult, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, dbError(err, "begin mapping sync")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	names := make([]string, 0, len(mappings))
	batch := &pgx.Batch{}
	for _, m := range mappings {
		names = append(names, m.Name)
		env := m.Env
		if env == nil {
			env = map[string]string{}
		}
		batch.Queue(`
			INSERT INTO mappings (name, dataset, refs, command, workdir, env, timeout_ms, max_attempts, source, enabled)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'file', true)
			ON CONFLICT (name) DO UPDATE SET
				dataset = EXCLUDED.dataset, refs = EXCLUDED.refs, command = EXCLUDED.command,
				workdir = EXCLUDED.workdir, env = EXCLUDED.env, timeout_ms = EXCLUDED.timeout_ms,
				max_attempts = EXCLUDED.max_attempts, source = 'file', enabled = true, updated_at = now()`,
			m.Name, m.Dataset, m.Refs, m.Command, m.Workdir, env, m.Timeout.Milliseconds(), m.MaxAttempts)
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, dbError(err, "upsert mappings")
	}

	res := &MappingSyncResult{Upserted: len(mappings)}
	rows, err := tx.Query(ctx, `
		UPDATE mappings SET enabled = false, updated_at = now()
		WHERE source = 'file' AND enabled AND NOT (name = ANY($1))
		RETURNING name`, names)
	if err != nil {
		return nil, dbError(err, "disable removed mappings")
	}
	res.Disabled, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbError(err, "disable removed mappings")
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, dbError(err, "commit mapping sync")
	}
	return res, nil
}

// MappingList returns every mapping, enabled or not, by name.
func (s *Store) MappingList(ctx context.Context) ([]Mapping, error) {
	return s.mappingQuery(ctx, `SELECT `+mappingColumns+` FROM mappings ORDER BY name`)
}

// MappingListEnabled returns the enabled mappings, by name.
func (s *Store) MappingListEnabled(ctx context.Context) ([]Mapping, error) {
	return s.mappingQuery(ctx, `SELECT `+mappingColumns+` FROM mappings WHERE enabled ORDER BY name`)
}

func (s *Store) mappingQuery(ctx context.Context, sql string, args ...any) ([]Mapping, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError(err, "list mappings")
	}
	mappings, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Mapping, error) {
		m, err := scanMapping(row)
		if err != nil {
			return Mapping{}, err
		}
		return *m, nil
	})
	if err != nil {
		return nil, dbError(err, "list mappings")
	}
	return mappings, nil
}

// MappingMaxTimeout returns the longest timeout of any mapping, or 0 when there are none.
func (s *Store) MappingMaxTimeout(ctx context.Context) (time.Duration, error) {
	var ms int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(timeout_ms), 0) FROM mappings`).Scan(&ms); err != nil {
		return 0, dbError(err, "read longest timeout")
	}
	return time.Duration(ms) * time.Millisecond, nil
}
