// Package dbtest provides tests with a real PostgreSQL server and an empty
// schema per test. It never skips: without a server the test fails and says
// how to get one.
//
// A package using it must call Main from its TestMain, so that a server
// started for the tests is stopped when they end, and no goroutine outlives
// them:
//
//	func TestMain(m *testing.M) { dbtest.Main(m) }
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"
	"go.uber.org/goleak"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
)

const (
	// EnvURL names the environment variable holding the connection string
	// of an existing server to test against.
	EnvURL = "TEST_DATABASE_URL"
	// EnvImage names the environment variable holding the PostgreSQL image
	// run on a Docker engine, DefaultImage when unset. The image must keep
	// the official image's contract: POSTGRES_HOST_AUTH_METHOD=trust lets
	// the postgres user in without a password, on port 5432.
	EnvImage = "TEST_POSTGRES_IMAGE"
	// DefaultImage is the PostgreSQL image run on a Docker engine when
	// TEST_POSTGRES_IMAGE is unset.
	DefaultImage = "postgres:16-alpine"

	// tempDirPattern names the directories of throwaway clusters.
	tempDirPattern = "orchestrator-test-pg-*"
	// ownerFile, inside a throwaway cluster's directory, holds the pid of
	// the test process using it.
	ownerFile = "owner.pid"
	// ownerLabel and hostLabel, on a container, hold the pid of the test
	// process using it and the name of its machine.
	ownerLabel = "org.retrainhq.orchestrator.dbtest.owner"
	hostLabel  = "org.retrainhq.orchestrator.dbtest.host"
	// sourceDocker and sourceLocal name where a started server runs.
	sourceDocker = "Docker"
	sourceLocal  = "local PostgreSQL"
	// schemaTimeout bounds creating and dropping a schema.
	schemaTimeout = 10 * time.Second
)

// server is the PostgreSQL server the tests of this process share.
type server struct {
	url string
	// source says where the server comes from: EnvURL, sourceDocker or
	// sourceLocal.
	source string
	// stop releases the server when this process started it; nil
	// otherwise.
	stop func()
}

var (
	// mainRunning is set by Main.
	mainRunning atomic.Bool

	// mu guards the fields below; it is held while the server starts, so
	// that parallel tests wait for the one start.
	mu        sync.Mutex
	started   bool
	shared    *server
	sharedErr error
)

// Main runs the tests of a package with m.Run, then stops the server this
// process started for them, if any, and exits with the tests' code. Call it
// from TestMain. An interrupt or termination signal also stops the server
// before the process exits.
//
// When the tests pass, Main then checks that none of the goroutines they
// started is still running (goleak), and fails the package if one is: a
// pool, client, server or process left behind by a test, or by the code it
// tests. No goroutine of a library needs excusing: the libraries used stop
// theirs when closed.
func Main(m *testing.M) {
	mainRunning.Store(true)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		release()
		fmt.Fprintf(os.Stderr, "dbtest: %v: stopped the test database server\n", sig)
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(signals)
	close(signals)
	release()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// release stops the shared server when this process started it.
func release() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil && shared.stop != nil {
		shared.stop()
		shared.stop = nil
	}
}

// URL returns the connection string of a PostgreSQL server for tests,
// started at most once per test process. It uses, in order:
//
//  1. the server named by TEST_DATABASE_URL, when set;
//  2. a postgres:16-alpine container (or the image TEST_POSTGRES_IMAGE
//     names), when a Docker engine answers;
//  3. a throwaway cluster run from the locally installed PostgreSQL server
//     binaries.
//
// When none is available, or the package's TestMain does not call Main, the
// test fails with instructions.
func URL(t testing.TB) string {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal("dbtest: the package's TestMain must call dbtest.Main(m), " +
			"which stops the test database server after the tests: func TestMain(m *testing.M) { dbtest.Main(m) }")
	}
	s, err := sharedServer()
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return s.url
}

// sharedServer starts the shared server on first use and remembers the
// outcome.
func sharedServer() (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		shared, sharedErr = startServer()
	}
	return shared, sharedErr
}

// startServer finds or starts a server.
func startServer() (*server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &server{url: u, source: EnvURL}, nil
	}

	var problems []string
	s, err := startContainer()
	if err == nil {
		return s, nil
	}
	problems = append(problems, sourceDocker+": "+err.Error())

	s, err = startCluster()
	if err == nil {
		return s, nil
	}
	problems = append(problems, sourceLocal+": "+err.Error())

	return nil, fmt.Errorf("no PostgreSQL server for the tests. Get one in any of these ways:\n"+
		"  - install the PostgreSQL server binaries: apt-get install -y postgresql\n"+
		"  - set %s to the connection string of a server, e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable\n"+
		"  - start a Docker engine\n"+
		"What was tried:\n  - %s", EnvURL, strings.Join(problems, "\n  - "))
}

// startContainer runs postgres:16-alpine, or the image TEST_POSTGRES_IMAGE
// names, on a Docker engine, when one answers.
func startContainer() (*server, error) {
	image := os.Getenv(EnvImage)
	if image == "" {
		image = DefaultImage
	}
	repository, tag, err := splitImage(image)
	if err != nil {
		return nil, err
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("connect to Docker: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pool.Client.PingWithContext(ctx); err != nil {
		return nil, fmt.Errorf("no Docker engine answers: %w", err)
	}
	host, _ := os.Hostname()
	reclaimContainers(pool, host)

	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: repository,
		Tag:        tag,
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust"},
		// Durability is not what the tests are about: the same settings as a throwaway local cluster's.
		Cmd:    []string{"postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"},
		Labels: map[string]string{ownerLabel: strconv.Itoa(os.Getpid()), hostLabel: host},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.NeverRestart()
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", image, err)
	}

	u := "postgres://postgres@" + res.GetHostPort("5432/tcp") + "/postgres?sslmode=disable"
	pool.MaxWait = time.Minute
	if err := pool.Retry(func() error { return ping(u) }); err != nil {
		_ = pool.Purge(res)
		return nil, fmt.Errorf("wait for the postgres container: %w", err)
	}
	return &server{url: u, source: sourceDocker, stop: func() { _ = pool.Purge(res) }}, nil
}

// splitImage splits an image reference into its repository and tag, the tag
// being "latest" when the reference has none.
func splitImage(image string) (repository, tag string, err error) {
	if strings.Contains(image, "@") || strings.ContainsAny(image, " \t\n") {
		return "", "", fmt.Errorf("%s=%q: want repository[:tag], without a digest or spaces", EnvImage, image)
	}
	repository, tag = image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		repository, tag = image[:i], image[i+1:]
	}
	if repository == "" || tag == "" {
		return "", "", fmt.Errorf("%s=%q: want repository[:tag]", EnvImage, image)
	}
	return repository, tag, nil
}

// reclaimContainers removes the containers of test processes of this machine
// that died without removing theirs (killed, or timed out).
func reclaimContainers(pool *dockertest.Pool, host string) {
	containers, err := pool.Client.ListContainers(docker.ListContainersOptions{
		All:     true,
		Filters: map[string][]string{"label": {ownerLabel}},
	})
	if err != nil {
		return
	}
	for _, c := range containers {
		pid, err := strconv.Atoi(c.Labels[ownerLabel])
		if err != nil || c.Labels[hostLabel] != host || pid <= 0 || processExists(pid) {
			continue
		}
		_ = pool.Client.RemoveContainer(docker.RemoveContainerOptions{ID: c.ID, Force: true, RemoveVolumes: true})
	}
}

// startCluster runs a throwaway cluster from the local server binaries.
func startCluster() (*server, error) {
	binDir, err := pgcluster.FindBinDir()
	if err != nil {
		return nil, err
	}
	reclaimAbandoned()

	dir, err := os.MkdirTemp("", tempDirPattern)
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("record cluster owner: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, BinDir: binDir, NoSync: true})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: stop the test database server: %v\n", err)
		}
		_ = os.RemoveAll(dir)
	}
	return &server{url: c.URL(), source: sourceLocal, stop: stop}, nil
}

// reclaimAbandoned stops the servers of throwaway clusters whose test process
// died without stopping them (killed, or timed out) and removes their
// directories.
func reclaimAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPattern))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			// Not ours, or its owner has not recorded itself yet.
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processExists(pid) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = pgcluster.StopStale(ctx, dir)
		cancel()
		if err == nil {
			_ = os.RemoveAll(dir)
		}
	}
}

// processExists reports whether a process with this pid exists.
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ping connects to the server at u once.
func ping(u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// NewMigratedPool creates a schema as NewSchema does, applies the migrations to it, and returns a pool on it,
// closed when t ends, with the schema's connection string.
func NewMigratedPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	connString, _ := NewSchema(t)
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		t.Fatalf("dbtest: connect to the test schema: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Apply(ctx, pool, nil); err != nil {
		t.Fatalf("dbtest: apply the migrations: %v", err)
	}
	return pool, connString
}

// NewSchema creates an empty schema with a unique name on the test server,
// drops it with everything in it when t ends, and returns a connection string
// whose search_path is that schema, so unqualified names (of tables created by
// migrations, say) resolve there, along with the schema name.
func NewSchema(t testing.TB) (connString string, schema string) {
	t.Helper()
	base := URL(t)

	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("dbtest: generate schema name: %v", err)
	}
	schema = "t_" + hex.EncodeToString(b[:])
	ident := pgx.Identifier{schema}.Sanitize()

	if err := execOnce(base, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("dbtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		if err := execOnce(base, "DROP SCHEMA IF EXISTS "+ident+" CASCADE"); err != nil {
			t.Errorf("dbtest: drop schema %s: %v", schema, err)
		}
	})

	connString, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return connString, schema
}

// execOnce runs sql on a fresh connection to connString.
func execOnce(connString, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), schemaTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withSearchPath sets the search_path run-time parameter in a connection
// string, either a URL or keyword/value pairs.
func withSearchPath(connString, schema string) (string, error) {
	if !strings.HasPrefix(connString, "postgres://") && !strings.HasPrefix(connString, "postgresql://") {
		return connString + " search_path=" + schema, nil
	}
	u, err := url.Parse(connString)
	if err != nil {
		return "", fmt.Errorf("parse connection string: %w", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
