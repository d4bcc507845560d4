package jobs

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// riverSchema returns a pool on a fresh schema with our migrations and River's applied, and an insert-only River
// client on it.
func riverSchema(t *testing.T) (*pgxpool.Pool, *river.Client[pgx.Tx]) {
	t.Helper()
	ctx := context.Background()
	url, _ := dbtest.NewSchema(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, migrations.Apply(ctx, pool, nil))
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	return pool, client
}

// TestRiverSchema checks what the statements of riverschema.go rely on in River's schema, as River's migrations
// create it, and runs each statement: an upgrade of River that renames, retypes or drops any of it fails here.
func TestRiverSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, client := riverSchema(t)

	t.Run("Columns", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			column, udt, dflt string
		}{
			// River's inserts take their ids from this sequence, so a reserved id is never another job's.
			{column: "id", udt: "int8", dflt: "nextval('river_job_id_seq'::regclass)"},
			{column: "kind", udt: "text"},
			{column: "state", udt: "river_job_state", dflt: "'available'::river_job_state"},
			{column: "attempted_at", udt: "timestamptz"},
			{column: "scheduled_at", udt: "timestamptz", dflt: "now()"},
		}
		for _, tc := range cases {
			t.Run(tc.column, func(t *testing.T) {
				t.Parallel()
				var udt, dflt string
				require.NoError(t, pool.QueryRow(ctx, `SELECT udt_name, coalesce(column_default, '') FROM information_schema.columns
					WHERE table_schema = current_schema() AND table_name = 'river_job' AND column_name = $1`, tc.column).
					Scan(&udt, &dflt), "river_job.%s is gone", tc.column)
				require.Equal(t, tc.udt, udt, "type of river_job.%s", tc.column)
				require.Equal(t, tc.dflt, dflt, "default of river_job.%s", tc.column)
			})
		}
	})

	t.Run("IDSequence", func(t *testing.T) {
		t.Parallel()
		var owned, dataType string
		var increment int64
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_serial_sequence('river_job', 'id')::regclass::text,
			s.data_type::text, s.increment_by
			FROM pg_sequences s WHERE s.schemaname = current_schema() AND s.sequencename = 'river_job_id_seq'`).
			Scan(&owned, &dataType, &increment), "river_job_id_seq is gone")
		require.Equal(t, "river_job_id_seq", owned, "the sequence of river_job.id")
		require.Equal(t, "bigint", dataType)
		require.Positive(t, increment, "ids grow: a reserved id is never handed out again")
	})

	t.Run("States", func(t *testing.T) {
		t.Parallel()
		var labels []string
		require.NoError(t, pool.QueryRow(ctx, `SELECT array_agg(e.enumlabel::text) FROM pg_enum e
			JOIN pg_type ty ON ty.oid = e.enumtypid JOIN pg_namespace n ON n.oid = ty.typnamespace
			WHERE ty.typname = 'river_job_state' AND n.nspname = current_schema()`).Scan(&labels))
		for _, want := range []string{"available", "running"} {
			require.Contains(t, labels, want, "a state the statements read or write")
		}
	})

	t.Run("JobIDReserve", func(t *testing.T) {
		t.Parallel()
		ids, err := jobIDReserve(ctx, pool, 3)
		require.NoError(t, err)
		require.Len(t, ids, 3)
		res, err := client.InsertMany(ctx, []river.InsertManyParams{{Args: NotifyArgs{NotificationID: 1}}})
		require.NoError(t, err)
		require.NotContains(t, ids, res[0].Job.ID, "River's own insert never takes a reserved id")
		require.Greater(t, res[0].Job.ID, slices.Max(ids), "River draws its ids from the same sequence")
	})
}
