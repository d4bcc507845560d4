package migrations_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// TestApplyConcurrently starts several "processes" (separate pools) applying the schema at once: all succeed,
// and every migration is applied exactly once.
func TestApplyConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, _ := dbtest.NewSchema(t)

	const processes = 4
	pools := make([]*pgxpool.Pool, processes)
	for i := range pools {
		pool, err := pgxpool.New(ctx, url)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		pools[i] = pool
	}
	require.Error(t, migrations.Check(ctx, pools[0]), "an empty schema is not ready")

	var wg sync.WaitGroup
	errs := make([]error, processes)
	for i, pool := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrations.Apply(ctx, pool, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, migrations.Check(ctx, pools[0]))

	var version int
	require.NoError(t, pools[0].QueryRow(ctx, `SELECT version FROM `+migrations.VersionTable).Scan(&version))
	files, err := filepath.Glob("*.sql")
	require.NoError(t, err)
	require.Equal(t, len(files), version)
	var riverVersions, distinct int
	require.NoError(t, pools[0].QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM river_migration`).
		Scan(&riverVersions, &distinct))
	require.Equal(t, distinct, riverVersions, "no River migration recorded twice")

	// Applying again is a no-op.
	require.NoError(t, migrations.Apply(ctx, pools[1], nil))
	require.NoError(t, migrations.Check(ctx, pools[1]))
}
