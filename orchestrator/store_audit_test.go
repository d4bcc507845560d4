package orchestrator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestAuditRecordRefusesUnknownValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	ok := orchestrator.AuditEntry{Action: orchestrator.AuditLogin, Outcome: orchestrator.AuditOK, Auth: orchestrator.AuditAuthSession}
	for _, tc := range []struct {
		name   string
		change func(e *orchestrator.AuditEntry)
		want   string // "" when the entry is recorded
	}{
		{"Valid", func(e *orchestrator.AuditEntry) {}, ""},
		{"UnknownAction", func(e *orchestrator.AuditEntry) { e.Action = "run.delete" }, `audit action must be run.retry, run.cancel, mapping.run_latest, mapping.create, mapping.update, mapping.disable or login, not "run.delete"`},
		{"UnknownOutcome", func(e *orchestrator.AuditEntry) { e.Outcome = "maybe" }, `audit outcome must be ok, refused or failed, not "maybe"`},
		{"UnknownAuth", func(e *orchestrator.AuditEntry) { e.Auth = "" }, `audit auth must be session, bearer, basic or none, not ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.change(&e)
			err := b.store.AuditRecord(ctx, e)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.want)
			require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
		})
	}
	_, err := b.store.AuditList(ctx, orchestrator.AuditListParams{Action: "nope"})
	require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
}

func TestAuditList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	actions := []orchestrator.AuditAction{orchestrator.AuditRunRetry, orchestrator.AuditRunCancel, orchestrator.AuditLogin}
	targets := []string{"1", "2", ""}
	for i := range 12 {
		require.NoError(t, b.store.AuditRecord(ctx, orchestrator.AuditEntry{
			Action: actions[i%3], Target: targets[i%2], Outcome: orchestrator.AuditOutcomeOf(400 + i%2*(-200)),
			Status: 200, Client: "192.0.2.7", Auth: orchestrator.AuditAuthBearer, Detail: fmt.Sprint("entry ", i),
		}))
	}
	all, err := b.store.AuditList(ctx, orchestrator.AuditListParams{})
	require.NoError(t, err)
	require.Len(t, all, 12)
	require.Equal(t, "entry 11", all[0].Detail, "newest first")
	require.Equal(t, "192.0.2.7", all[0].Client)
	require.WithinDuration(t, time.Now(), all[0].At, time.Minute)

	for _, f := range []orchestrator.AuditListParams{
		{}, {Action: orchestrator.AuditRunRetry}, {Target: "1"}, {Target: "2", Action: orchestrator.AuditRunCancel},
		{Action: orchestrator.AuditMappingCreate}, {Target: "missing"}, {Target: "", Action: orchestrator.AuditLogin},
	} {
		t.Run(fmt.Sprintf("%s/%s", f.Action, f.Target), func(t *testing.T) {
			var want []int64
			for _, e := range all {
				if (f.Action == "" || e.Action == f.Action) && (f.Target == "" || e.Target == f.Target) {
					want = append(want, e.ID)
				}
			}
			var got []int64
			for before := int64(0); ; {
				p := f
				p.Limit, p.BeforeID = 2, before
				page, err := b.store.AuditList(ctx, p)
				require.NoError(t, err)
				for _, e := range page {
					got = append(got, e.ID)
				}
				if len(page) < 2 {
					break
				}
				before = page[len(page)-1].ID
			}
			require.Equal(t, want, got)
		})
	}
}

func TestAuditPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, age := range []string{"100 days", "91 days", "89 days", "1 hour", "0"} {
		_, err := b.pool.Exec(ctx, `INSERT INTO audit_log (at, action, outcome, auth, detail)
			VALUES (now() - $1::interval, 'login', 'ok', 'session', $1)`, age)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		name      string
		retention time.Duration
		deleted   int64
		left      int
	}{
		{"KeepForever", 0, 0, 5},
		{"NinetyDays", 90 * 24 * time.Hour, 2, 3},
		{"AgainNothing", 90 * 24 * time.Hour, 0, 3},
		{"OneDay", 24 * time.Hour, 1, 2},
	} {
		n, err := b.store.AuditPrune(ctx, tc.retention)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.deleted, n, tc.name)
		require.Equal(t, tc.left, count(t, b.pool, `SELECT count(*) FROM audit_log`), tc.name)
	}
}

// TestAuditListReadsLittle checks that a page of the audit trail reads a handful of pages at a million entries,
// for every filter, with the generic plan as with the custom one, the filtered entries being the oldest.
func TestAuditListReadsLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("a million rows")
	}
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// A million logins by one client, after a few retries of run 7 and cancels of mapping "rare": the filtered
	// entries are at the far end of the primary key.
	_, err := b.pool.Exec(ctx, `INSERT INTO audit_log (action, target, outcome, auth)
		SELECT CASE WHEN g % 2 = 0 THEN 'run.retry' ELSE 'mapping.disable' END, CASE WHEN g % 2 = 0 THEN '7' ELSE 'rare' END,
			'ok', 'session' FROM generate_series(1, 100) g`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `INSERT INTO audit_log (action, target, outcome, auth, client)
		SELECT 'login', '', 'refused', 'none', '198.51.100.' || (g % 250) FROM generate_series(1, 1000000) g`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `ANALYZE audit_log`)
	require.NoError(t, err)

	for _, p := range []orchestrator.AuditListParams{
		{}, {BeforeID: 500000}, {Action: orchestrator.AuditRunRetry}, {Action: orchestrator.AuditLogin, BeforeID: 900000},
		{Target: "rare"}, {Target: "7", Action: orchestrator.AuditRunRetry}, {Target: "7", Action: orchestrator.AuditLogin},
		{Target: "", Action: orchestrator.AuditLogin},
	} {
		for _, plans := range []string{"force_generic_plan", "force_custom_plan"} {
			t.Run(fmt.Sprintf("%s/%s/%d/%s", p.Action, p.Target, p.BeforeID, plans), func(t *testing.T) {
				tx, err := b.pool.Begin(ctx)
				require.NoError(t, err)
				defer func() { _ = tx.Rollback(ctx) }()
				_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+plans)
				require.NoError(t, err)
				sql, args := orchestrator.AuditListSQL(p)
				var plan []struct {
					Plan struct {
						SharedHit  int `json:"Shared Hit Blocks"`
						SharedRead int `json:"Shared Read Blocks"`
					} `json:"Plan"`
				}
				require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+sql, args...).Scan(&plan))
				require.Len(t, plan, 1)
				pages := plan[0].Plan.SharedHit + plan[0].Plan.SharedRead
				if pages >= 100 {
					rows, _ := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+sql, args...)
					for rows.Next() {
						var line string
						_ = rows.Scan(&line)
						t.Log(line)
					}
					rows.Close()
				}
				require.Less(t, pages, 100, "the page read %d pages", pages)
			})
		}
	}
}
