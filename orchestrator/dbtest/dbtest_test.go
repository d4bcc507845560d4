package dbtest_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

func TestMain(m *testing.M) {
	dbtest.Main(m)
}

// connect opens a connection closed when the test ends.
func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// schemaExists reports whether the named schema exists on the test server.
func schemaExists(t *testing.T, schema string) bool {
	t.Helper()
	var exists bool
	err := connect(t, dbtest.URL(t)).QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists)
	require.NoError(t, err)
	return exists
}

func TestURLIsShared(t *testing.T) {
	t.Parallel()

	first := dbtest.URL(t)
	require.Equal(t, first, dbtest.URL(t))
	var one int
	require.NoError(t, connect(t, first).QueryRow(context.Background(), "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)
}

func TestNewSchemaIsolatesTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	urlA, schemaA := dbtest.NewSchema(t)
	urlB, schemaB := dbtest.NewSchema(t)
	require.NotEqual(t, schemaA, schemaB)
	require.Regexp(t, `^t_[0-9a-f]{16}$`, schemaA)

	for _, tc := range []struct {
		url, schema, value string
	}{
		{urlA, schemaA, "in a"},
		{urlB, schemaB, "in b"},
	} {
		conn := connect(t, tc.url)
		_, err := conn.Exec(ctx, "CREATE TABLE items (v text)")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "INSERT INTO items VALUES ($1)", tc.value)
		require.NoError(t, err)

		var schema string
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT table_schema FROM information_schema.tables WHERE table_name = 'items' AND table_schema = current_schema()").Scan(&schema))
		require.Equal(t, tc.schema, schema)
	}

	for _, tc := range []struct {
		url, value string
	}{
		{urlA, "in a"},
		{urlB, "in b"},
	} {
		var values []string
		rows, err := connect(t, tc.url).Query(ctx, "SELECT v FROM items")
		require.NoError(t, err)
		values, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{tc.value}, values)
	}
}

func TestNewSchemaDroppedAtCleanup(t *testing.T) {
	t.Parallel()

	var schema string
	t.Run("user", func(t *testing.T) {
		var connString string
		connString, schema = dbtest.NewSchema(t)
		_, err := connect(t, connString).Exec(context.Background(), "CREATE TABLE leftovers (id int)")
		require.NoError(t, err)
		require.True(t, schemaExists(t, schema))
	})
	require.False(t, schemaExists(t, schema), "schema %s is dropped when its test ends", schema)
}

// TestMainFindsLeaks runs this test binary again with a test that leaves a goroutine running: Main fails the
// package and names the goroutine.
func TestMainFindsLeaks(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeakingHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DBTEST_LEAK=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "%s", out)
	require.Equal(t, 1, exitErr.ExitCode(), "%s", out)
	require.Contains(t, string(out), "dbtest: goroutines outlived the tests")
	require.Contains(t, string(out), "TestLeakingHelper")
}

// TestLeakingHelper leaves a goroutine blocked for ever when DBTEST_LEAK is set, for TestMainFindsLeaks.
func TestLeakingHelper(t *testing.T) {
	if os.Getenv("DBTEST_LEAK") == "" {
		return
	}
	go func() { select {} }()
}
