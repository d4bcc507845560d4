package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Storing mappings: those the configuration file declares, synced at start, and those created through the API.
// The in-memory copy that decides deliveries is mapping_cache.go.

const mappingColumns = `id, name, dataset, refs, command, workdir, env, timeout_ms, max_attempts, source, enabled,
	created_at, updated_at, quiet_period_ms, max_wait_ms, concurrency, on_new_revision, run_on_baseline, verify_revision,
	queue, notify, paths, ignore_paths, executor, hf_jobs`

// mappingDest returns the scan destinations of mappingColumns; call fromMillis after scanning.
func mappingDest(m *Mapping) []any {
	return []any{&m.ID, &m.Name, &m.Dataset, &m.Refs, &m.Command, &m.Workdir, &m.Env, &m.timeoutMS,
		&m.MaxAttempts, &m.Source, &m.Enabled, &m.CreatedAt, &m.UpdatedAt, &m.quietMS, &m.maxWaitMS,
		&m.Concurrency, &m.OnNewRevision, &m.RunOnBaseline, &m.VerifyRevision, &m.Queue, &m.Notify, &m.Paths,
		&m.IgnorePaths, &m.Executor, &m.HFJobs}
}

// mappingArgs returns the settings of m as arguments $1..$20 of an insert or update.
func mappingArgs(m Mapping) []any {
	return []any{m.Name, m.Dataset, m.Refs, m.Command, m.Workdir, envOrEmpty(m.Env), m.Timeout.Milliseconds(),
		m.MaxAttempts, m.QuietPeriod.Milliseconds(), m.MaxWait.Milliseconds(), m.Concurrency, m.OnNewRevision,
		m.RunOnBaseline, m.VerifyRevision, m.Queue, notifyOrEmpty(m.Notify), stringsOrEmpty(m.Paths),
		stringsOrEmpty(m.IgnorePaths), executorOrLocal(m.Executor), m.HFJobs}
}

// mappingSettings lists the columns of mappingArgs, in order.
const mappingSettings = `name, dataset, refs, command, workdir, env, timeout_ms, max_attempts, quiet_period_ms, max_wait_ms,
	concurrency, on_new_revision, run_on_baseline, verify_revision, queue, notify, paths, ignore_paths, executor, hf_jobs`

func scanMapping(row pgx.Row) (*Mapping, error) {
	var m Mapping
	if err := row.Scan(mappingDest(&m)...); err != nil {
		return nil, err
	}
	m.fromMillis()
	return &m, nil
}

// mappingUpsertFileSQL inserts or updates, by name, a mapping the configuration file declares, and enables it.
var mappingUpsertFileSQL = `
INSERT INTO mappings (` + mappingSettings + `, source, enabled)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, ` + sqlSourceFile + `, true)
ON CONFLICT (name) DO UPDATE SET
	dataset = EXCLUDED.dataset, refs = EXCLUDED.refs, command = EXCLUDED.command,
	workdir = EXCLUDED.workdir, env = EXCLUDED.env, timeout_ms = EXCLUDED.timeout_ms,
	max_attempts = EXCLUDED.max_attempts, quiet_period_ms = EXCLUDED.quiet_period_ms,
	max_wait_ms = EXCLUDED.max_wait_ms, concurrency = EXCLUDED.concurrency,
	on_new_revision = EXCLUDED.on_new_revision, run_on_baseline = EXCLUDED.run_on_baseline,
	verify_revision = EXCLUDED.verify_revision, queue = EXCLUDED.queue, notify = EXCLUDED.notify,
	paths = EXCLUDED.paths, ignore_paths = EXCLUDED.ignore_paths,
	executor = EXCLUDED.executor, hf_jobs = EXCLUDED.hf_jobs,
	source = ` + sqlSourceFile + `, enabled = true,
	updated_at = now()`

// mappingDisableUndeclaredSQL disables the enabled file mappings whose names are not in $1, and returns their
// names.
var mappingDisableUndeclaredSQL = `
UPDATE mappings SET enabled = false, updated_at = now()
WHERE source = ` + sqlSourceFile + ` AND enabled AND NOT (name = ANY($1))
RETURNING name`

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
		batch.Queue(mappingUpsertFileSQL, mappingArgs(m)...)
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, dbError(err, "upsert mappings")
	}

	res := &MappingSyncResult{Upserted: len(mappings)}
	rows, err := tx.Query(ctx, mappingDisableUndeclaredSQL, names)
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

// Statements that read mappings.
const (
	mappingListSQL        = `SELECT ` + mappingColumns + ` FROM mappings ORDER BY name`
	mappingListEnabledSQL = `SELECT ` + mappingColumns + ` FROM mappings WHERE enabled ORDER BY name`
	mappingGetByNameSQL   = `SELECT ` + mappingColumns + ` FROM mappings WHERE name = $1`
)

// MappingList returns every mapping, enabled or not, by name.
func (s *Store) MappingList(ctx context.Context) ([]Mapping, error) {
	return s.mappingQuery(ctx, mappingListSQL)
}

// MappingListEnabled returns the enabled mappings, by name.
func (s *Store) MappingListEnabled(ctx context.Context) ([]Mapping, error) {
	return s.mappingQuery(ctx, mappingListEnabledSQL)
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

// MappingGetByName returns one mapping, or an error with CodeNotFound.
func (s *Store) MappingGetByName(ctx context.Context, name string) (*Mapping, error) {
	m, err := scanMapping(s.pool.QueryRow(ctx, mappingGetByNameSQL, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "mapping %q not found", name)
	}
	if err != nil {
		return nil, dbError(err, "get mapping")
	}
	return m, nil
}

// mappingCreateSQL inserts an API mapping, enabled, unless one of its name exists.
var mappingCreateSQL = `
INSERT INTO mappings (` + mappingSettings + `, source, enabled)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, ` + sqlSourceAPI + `, true)
ON CONFLICT (name) DO NOTHING
RETURNING ` + mappingColumns

// MappingCreate registers a new mapping through the API. m is validated with its defaults applied; a name that
// exists already, enabled or not, is CodeConflict.
func (s *Store) MappingCreate(ctx context.Context, m Mapping) (*Mapping, error) {
	m = m.WithDefaults()
	m.Source, m.Enabled = SourceAPI, true
	if err := m.Validate(); err != nil {
		return nil, err
	}
	created, err := scanMapping(s.pool.QueryRow(ctx, mappingCreateSQL, mappingArgs(m)...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeConflict, "mapping %q exists already", m.Name)
	}
	if err != nil {
		return nil, dbError(err, "create mapping")
	}
	return created, nil
}

// mappingUpdateSQL replaces the settings of the API mapping named $1, and enables it.
var mappingUpdateSQL = `
UPDATE mappings SET dataset = $2, refs = $3, command = $4, workdir = $5, env = $6, timeout_ms = $7,
	max_attempts = $8, quiet_period_ms = $9, max_wait_ms = $10, concurrency = $11, on_new_revision = $12,
	run_on_baseline = $13, verify_revision = $14, queue = $15, notify = $16, paths = $17, ignore_paths = $18,
	executor = $19, hf_jobs = $20, enabled = true, updated_at = now()
WHERE name = $1 AND source = ` + sqlSourceAPI + `
RETURNING ` + mappingColumns

// MappingUpdate replaces the settings of an API mapping (and enables it). The configuration file owns the
// mappings it declares: updating one of those is CodeConflict.
func (s *Store) MappingUpdate(ctx context.Context, m Mapping) (*Mapping, error) {
	m = m.WithDefaults()
	m.Source, m.Enabled = SourceAPI, true
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := s.mappingCheckEditable(ctx, m.Name); err != nil {
		return nil, err
	}
	updated, err := scanMapping(s.pool.QueryRow(ctx, mappingUpdateSQL, mappingArgs(m)...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "mapping %q not found", m.Name)
	}
	if err != nil {
		return nil, dbError(err, "update mapping")
	}
	return updated, nil
}

// mappingDisableSQL disables the API mapping named $1.
var mappingDisableSQL = `
UPDATE mappings SET enabled = false, updated_at = now() WHERE name = $1 AND source = ` + sqlSourceAPI + `
RETURNING ` + mappingColumns

// MappingDisable disables an API mapping; its runs stay. Disabling a mapping the configuration file declares
// is CodeConflict: remove it from the file instead.
func (s *Store) MappingDisable(ctx context.Context, name string) (*Mapping, error) {
	if err := s.mappingCheckEditable(ctx, name); err != nil {
		return nil, err
	}
	m, err := scanMapping(s.pool.QueryRow(ctx, mappingDisableSQL, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "mapping %q not found", name)
	}
	if err != nil {
		return nil, dbError(err, "disable mapping")
	}
	return m, nil
}

func (s *Store) mappingCheckEditable(ctx context.Context, name string) error {
	m, err := s.MappingGetByName(ctx, name)
	if err != nil {
		return err
	}
	if m.Source == SourceFile {
		return Errorf(CodeConflict, "mapping %q is declared in the configuration file; change it there", name)
	}
	return nil
}

// executorOrLocal returns k, or ExecutorLocal for a mapping stored without its defaults applied.
func executorOrLocal(k ExecutorKind) ExecutorKind {
	if k == "" {
		return ExecutorLocal
	}
	return k
}

func notifyOrEmpty(targets []NotifyTarget) []NotifyTarget {
	if targets == nil {
		return []NotifyTarget{}
	}
	return targets
}

// stringsOrEmpty returns list, or an empty list for nil: the columns of lists hold '{}', never NULL.
func stringsOrEmpty(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

func envOrEmpty(env map[string]string) map[string]string {
	if env == nil {
		return map[string]string{}
	}
	return env
}

// MappingSummary is a mapping with its recent runs, newest first, for the dashboard.
type MappingSummary struct {
	Mapping
	Recent []RunBrief `json:"recent"`
}

// RunBrief is the little the dashboard's history strip shows of a run.
type RunBrief struct {
	ID        int64     `json:"id"`
	Status    RunStatus `json:"status"`
	Ref       string    `json:"ref"`
	Revision  string    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
}

// Latest returns the newest run, or nil when there is none.
func (m MappingSummary) Latest() *RunBrief {
	if len(m.Recent) == 0 {
		return nil
	}
	return &m.Recent[0]
}

// mappingSummaryListSQL lists every mapping, enabled first, with its last 10 runs as a JSON array: one index scan
// per mapping. (The mapping is matched as a range and the ORDER BY names mapping_id: only runs_mapping_idx can
// then serve the order, where with a plain equality the planner walks the primary key backwards, filtering,
// which with a million runs meant reading most of them for every mapping whose runs are not the newest.)
const mappingSummaryListSQL = `
SELECT ` + mappingColumns + `,
	coalesce((SELECT json_agg(json_build_object('id', r.id, 'status', r.status, 'ref', r.ref,
		'revision', r.revision, 'created_at', r.created_at) ORDER BY r.id DESC)
		FROM (SELECT id, status, ref, revision, created_at FROM runs
			WHERE mapping_id >= mappings.id AND mapping_id <= mappings.id
			ORDER BY mapping_id, id DESC LIMIT 10) r), '[]')
FROM mappings ORDER BY enabled DESC, name`

// MappingSummaryList returns every mapping with its last 10 runs, in one query (mappingSummaryListSQL).
func (s *Store) MappingSummaryList(ctx context.Context) ([]MappingSummary, error) {
	rows, err := s.pool.Query(ctx, mappingSummaryListSQL)
	if err != nil {
		return nil, dbError(err, "list mappings")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MappingSummary, error) {
		var ms MappingSummary
		err := row.Scan(append(mappingDest(&ms.Mapping), &ms.Recent)...)
		ms.fromMillis()
		return ms, err
	})
	if err != nil {
		return nil, dbError(err, "list mappings")
	}
	return list, nil
}
