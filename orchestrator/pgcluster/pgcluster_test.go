package pgcluster

import (
	"context"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// clusterDir returns a fresh directory for a cluster. When the tests run as
// root the server runs as the postgres user, which must be able to enter the
// directory's parents; the testing package creates them with mode 0700.
func clusterDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		return filepath.Join(dir, "pg")
	}
	top := filepath.Clean(os.TempDir())
	for p := dir; p != top && p != filepath.Dir(p); p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.NoError(t, os.Chmod(p, fi.Mode().Perm()|0o001))
	}
	return filepath.Join(dir, "pg")
}

// startCluster starts a throwaway cluster in dir and stops it when the test
// ends.
func startCluster(t *testing.T, dir string) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Dir: dir, NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, c.Stop(context.Background()))
	})
	return c
}

// connect opens a connection closed when the test ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// exited reports whether the cluster's server process exits within d.
func exited(c *Cluster, d time.Duration) bool {
	select {
	case <-c.Done():
		return true
	default:
	}
	select {
	case <-c.Done():
		return true
	case <-time.After(d):
		return false
	}
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := clusterDir(t)

	first := startCluster(t, dir)
	require.Contains(t, first.URL(), "/orchestrator?sslmode=disable")
	require.Contains(t, first.AdminURL(), "/postgres?sslmode=disable")
	conn := connect(t, first.URL())
	_, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, first.Stop(ctx))
	require.NoError(t, first.Stop(ctx), "Stop is idempotent")
	require.True(t, exited(first, 0))

	second := startCluster(t, dir)
	var v string
	require.NoError(t, connect(t, second.URL()).QueryRow(ctx, "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "hello", v)

	// A server that died on its own can still be stopped.
	require.NoError(t, syscall.Kill(-second.cmd.Process.Pid, syscall.SIGKILL))
	require.True(t, exited(second, 10*time.Second))
	require.NoError(t, second.Stop(ctx))

	log, err := os.ReadFile(filepath.Join(dir, "postgres.log"))
	require.NoError(t, err)
	require.Contains(t, string(log), "database system is ready to accept connections")
}

// TestListenAlso starts a cluster that also listens on 127.0.0.2 and is reached from that address, whose
// clients the default pg_hba.conf (which trusts 127.0.0.1 alone) refuses: the connection works, and a restart
// keeps one pg_hba.conf line.
func TestListenAlso(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := clusterDir(t)
	cfg := Config{Dir: dir, NoSync: true, Listen: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	for range 2 {
		c, err := Start(ctx, cfg)
		require.NoError(t, err)
		connCfg, err := pgx.ParseConfig(c.URL())
		require.NoError(t, err)
		connCfg.Host = "127.0.0.2"
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		connCfg.DialFunc = dialer.DialContext
		conn, err := pgx.ConnectConfig(ctx, connCfg)
		require.NoError(t, err)
		var server, client string
		require.NoError(t, conn.QueryRow(ctx, "SELECT host(inet_server_addr()), host(inet_client_addr())").Scan(&server, &client))
		require.Equal(t, []string{"127.0.0.2", "127.0.0.2"}, []string{server, client})
		require.NoError(t, conn.Close(ctx))
		require.NoError(t, c.Stop(ctx))
	}
	hba, err := os.ReadFile(filepath.Join(dir, "data", "pg_hba.conf"))
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(hba), "host all all 127.0.0.2/32 trust"), "%s", hba)
}

func TestStartTakesOverStaleServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := clusterDir(t)

	abandoned := startCluster(t, dir)
	_, err := connect(t, abandoned.URL()).Exec(ctx, "CREATE TABLE before_crash (id int)")
	require.NoError(t, err)

	successor := startCluster(t, dir)
	require.True(t, exited(abandoned, 0), "the stale server is stopped before the new one starts")
	require.NoError(t, connect(t, successor.URL()).QueryRow(ctx, "SELECT count(*) FROM before_crash").Scan(new(int)))
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = Start(ctx, Config{Dir: clusterDir(t), NoSync: true, Port: l.Addr().(*net.TCPAddr).Port})
	require.ErrorIs(t, err, errPortInUse)
	require.ErrorContains(t, err, "Address already in use")
	require.ErrorContains(t, err, "postgres.log")
}

func TestStartRootPreconditions(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("the server runs as another user only when the tests run as root")
	}

	tests := []struct {
		name string
		// setup returns the config to start and the texts the error must
		// contain.
		setup func(t *testing.T) (Config, []string)
	}{
		{
			name: "missing user",
			setup: func(t *testing.T) (Config, []string) {
				cfg := Config{Dir: clusterDir(t), RunAsUser: "orchestrator-no-such-user"}
				return cfg, []string{`"orchestrator-no-such-user"`, "useradd --system --user-group orchestrator-no-such-user"}
			},
		},
		{
			name: "parent not traversable",
			setup: func(t *testing.T) (Config, []string) {
				blocked := filepath.Join(clusterDir(t), "blocked")
				require.NoError(t, os.MkdirAll(blocked, 0o700))
				require.NoError(t, os.Chmod(blocked, 0o700))
				cfg := Config{Dir: filepath.Join(blocked, "cluster")}
				return cfg, []string{blocked + " (mode 0700", "/var/lib/orchestrator", "chmod o+x " + blocked}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, want := tt.setup(t)
			cfg.NoSync = true

			_, err := Start(context.Background(), cfg)
			require.Error(t, err)
			for _, w := range want {
				require.ErrorContains(t, err, w)
			}
			_, statErr := os.Stat(filepath.Join(cfg.Dir, "data"))
			require.ErrorIs(t, statErr, fs.ErrNotExist, "nothing is initialized")
		})
	}
}

func TestCanTraverse(t *testing.T) {
	t.Parallel()

	const uid, gid, other = 101, 104, 999
	tests := []struct {
		name     string
		mode     fs.FileMode
		owner    uint32
		group    uint32
		groups   []uint32
		expected bool
	}{
		{name: "owner with x", mode: 0o700, owner: uid, group: other, expected: true},
		{name: "owner without x despite other x", mode: 0o601, owner: uid, group: other, expected: false},
		{name: "group member with x", mode: 0o710, owner: other, group: gid, expected: true},
		{name: "supplementary group with x", mode: 0o710, owner: other, group: 103, groups: []uint32{103}, expected: true},
		{name: "group member without x", mode: 0o701, owner: other, group: gid, expected: false},
		{name: "other with x", mode: 0o711, owner: other, group: other, expected: true},
		{name: "other without x", mode: 0o770, owner: other, group: other, expected: false},
		{name: "sticky world writable", mode: fs.ModeSticky | 0o777, owner: 0, group: 0, expected: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			groups := append([]uint32{gid}, tt.groups...)
			require.Equal(t, tt.expected, canTraverse(tt.mode, tt.owner, tt.group, uid, groups))
		})
	}
}
