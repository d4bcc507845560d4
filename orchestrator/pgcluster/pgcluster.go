// Package pgcluster runs a private PostgreSQL server from locally installed
// server binaries: the embedded default database of the serve command, kept
// across restarts, and throwaway clusters for tests.
//
// The server listens on 127.0.0.1 (and on the addresses of Config.Listen,
// which tests give it to be reached from a network namespace of their own),
// has Unix-domain sockets disabled and trusts every local connection, so it
// must not hold data that other local users may not read. When the calling process is root, the server runs as an
// unprivileged user, because PostgreSQL refuses to run as root.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// Superuser is the name of the cluster's superuser.
	Superuser = "postgres"
	// DefaultDatabase is the database Start creates when Config.Database is
	// empty.
	DefaultDatabase = "orchestrator"
	// DefaultRunAsUser is the user the server runs as when the process is
	// root and Config.RunAsUser is empty.
	DefaultRunAsUser = "postgres"

	// readyTimeout bounds how long Start waits for the server to accept
	// connections.
	readyTimeout = 30 * time.Second
	// portAttempts is how many ports Start tries when Config.Port is 0.
	portAttempts = 3
	// logTailLines is how many server log lines startup errors include.
	logTailLines = 20
)

// errPortInUse marks a start that failed because another process took the
// port.
var errPortInUse = errors.New("port already in use")

// Config describes a cluster to start.
type Config struct {
	// Dir is the cluster directory, created if missing: the data lives in
	// Dir/data and the server log in Dir/postgres.log. Required.
	Dir string
	// BinDir is the directory of the initdb and postgres binaries;
	// FindBinDir() when empty.
	BinDir string
	// Port is the TCP port on 127.0.0.1 to listen on; 0 picks a free port at
	// each start.
	Port int
	// Database is created when missing and named by URL(); DefaultDatabase
	// when empty.
	Database string
	// NoSync initializes with --no-sync and runs with fsync,
	// synchronous_commit and full_page_writes off: faster, but a crash can
	// corrupt the data. For throwaway test clusters only.
	NoSync bool
	// Listen lists addresses to listen on besides 127.0.0.1, each with the
	// length of its network, such as 198.18.0.1/30: clients from that network
	// are trusted like local ones. For tests that reach the server from a
	// network namespace of their own; empty for loopback only.
	Listen []netip.Prefix
	// RunAsUser is the user to run initdb and the server as when the process
	// is root; DefaultRunAsUser when empty. Ignored when not root.
	RunAsUser string
	// Logger receives progress and warnings; nothing is logged when nil.
	Logger *slog.Logger
}

// Cluster is a running PostgreSQL server started by Start. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir      string
	dataDir  string
	logPath  string
	port     int
	database string
	log      *slog.Logger
	cmd      *exec.Cmd

	// exited is closed once the server process has exited and been reaped;
	// waitErr is its exit status, readable after exited is closed.
	exited  chan struct{}
	waitErr error

	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

// Start initializes the cluster directory when needed, stops a server left
// running on it by an earlier process, starts the server, waits until it
// accepts connections and creates the configured database. The server keeps
// running after ctx ends; ctx bounds only the start. Only one Cluster may run
// on a directory at a time.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start postgres: no cluster directory configured")
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.RunAsUser == "" {
		cfg.RunAsUser = DefaultRunAsUser
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.BinDir == "" {
		dir, err := FindBinDir()
		if err != nil {
			return nil, err
		}
		cfg.BinDir = dir
	}
	if !hasServerBinaries(cfg.BinDir) {
		return nil, fmt.Errorf("start postgres: %s does not contain the initdb and postgres binaries", cfg.BinDir)
	}

	acc, err := lookupAccount(cfg.RunAsUser)
	if err != nil {
		return nil, err
	}
	dir, err := prepareDir(cfg.Dir, acc)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")

	if err := stopStale(ctx, dataDir, log); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		log.Info("initializing PostgreSQL cluster", "data_dir", dataDir)
		if err := initdb(ctx, cfg, dir, dataDir, logPath, acc); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := trustNetworks(dataDir, cfg.Listen); err != nil {
		return nil, err
	}

	var c *Cluster
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		c, err = launch(ctx, cfg, dir, dataDir, logPath, port, acc, log)
		if err == nil {
			break
		}
		if cfg.Port == 0 && attempt < portAttempts && errors.Is(err, errPortInUse) {
			log.Info("port taken before postgres could bind it; retrying", "port", port)
			continue
		}
		return nil, err
	}

	if err := c.createDatabase(ctx); err != nil {
		if stopErr := c.Stop(context.Background()); stopErr != nil {
			log.Warn("stop postgres after failed start", "error", stopErr)
		}
		return nil, err
	}
	log.Info("PostgreSQL is ready", "port", c.port, "data_dir", dataDir, "log", logPath)
	return c, nil
}

// prepareDir creates the cluster directory and, when the server runs as
// another user, checks that user can reach it and gives it the directory. It
// returns the directory as an absolute path without symbolic links.
func prepareDir(dir string, acc *account) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve cluster directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("create cluster directory: %w", err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", fmt.Errorf("resolve cluster directory %s: %w", dir, err)
	}
	if acc == nil {
		return abs, nil
	}
	if err := checkTraversable(abs, acc); err != nil {
		return "", err
	}
	if err := chownTree(abs, acc); err != nil {
		return "", fmt.Errorf("prepare cluster directory: %w", err)
	}
	return abs, nil
}

// openLog opens the server log for appending and returns its current size.
func openLog(logPath string, acc *account) (*os.File, int64, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open server log: %w", err)
	}
	if acc != nil {
		if err := f.Chown(int(acc.uid), int(acc.gid)); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("give server log to user %s: %w", acc.name, err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open server log: %w", err)
	}
	return f, fi.Size(), nil
}

// initdb creates a new cluster in dataDir, appending its output to the log.
func initdb(ctx context.Context, cfg Config, dir, dataDir, logPath string, acc *account) error {
	logFile, offset, err := openLog(logPath, acc)
	if err != nil {
		return err
	}
	defer logFile.Close()

	args := []string{"-D", dataDir, "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C"}
	if cfg.NoSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.BinDir, "initdb"), args...)
	cmd.Dir = dir
	cmd.Env = childEnv(acc)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(acc)
	// initdb runs the server in bootstrap mode as a child: cancel them all.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("initialize cluster in %s: %w; last lines of %s:\n%s",
			dataDir, err, logPath, lastLines(logSince(logPath, offset), logTailLines))
	}
	return nil
}

// trustNetworks adds a line to the cluster's pg_hba.conf that trusts the network of each prefix, unless it has
// one already.
func trustNetworks(dataDir string, prefixes []netip.Prefix) error {
	if len(prefixes) == 0 {
		return nil
	}
	path := filepath.Join(dataDir, "pg_hba.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read pg_hba.conf: %w", err)
	}
	var add strings.Builder
	for _, p := range prefixes {
		line := fmt.Sprintf("host all all %s trust", p.Masked())
		if !slices.Contains(strings.Split(string(data), "\n"), line) {
			add.WriteString(line + "\n")
		}
	}
	if add.Len() == 0 {
		return nil
	}
	// Appending keeps the file's owner, the server's user.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open pg_hba.conf: %w", err)
	}
	if _, err := f.WriteString("\n" + add.String()); err != nil {
		f.Close()
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	return f.Close()
}

// launch starts the server on port and waits until it accepts connections.
func launch(ctx context.Context, cfg Config, dir, dataDir, logPath string, port int, acc *account, log *slog.Logger) (*Cluster, error) {
	logFile, offset, err := openLog(logPath, acc)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	listen := []string{"127.0.0.1"}
	for _, p := range cfg.Listen {
		listen = append(listen, p.Addr().String())
	}
	args := []string{
		"-D", dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=" + strings.Join(listen, ","),
		"-c", "unix_socket_directories=",
	}
	if cfg.NoSync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// Not tied to ctx: the server outlives the start.
	cmd := exec.Command(filepath.Join(cfg.BinDir, "postgres"), args...)
	cmd.Dir = dir
	cmd.Env = childEnv(acc)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(acc)

	log.Info("starting PostgreSQL", "bin_dir", cfg.BinDir, "data_dir", dataDir, "port", port)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{
		dir:      dir,
		dataDir:  dataDir,
		logPath:  logPath,
		port:     port,
		database: cfg.Database,
		log:      log,
		cmd:      cmd,
		exited:   make(chan struct{}),
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()

	if err := c.waitReady(ctx); err != nil {
		if stopErr := c.Stop(context.Background()); stopErr != nil {
			log.Warn("stop postgres after failed start", "error", stopErr)
		}
		out := logSince(logPath, offset)
		if errors.Is(err, errExitedEarly) && strings.Contains(out, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return nil, fmt.Errorf("start postgres on port %d: %w; last lines of %s:\n%s",
			port, err, logPath, lastLines(out, logTailLines))
	}
	return c, nil
}

// errExitedEarly marks a server that exited before accepting connections.
var errExitedEarly = errors.New("postgres exited during startup")

// waitReady polls the server until it accepts connections, it exits, ctx
// ends or readyTimeout passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("%w (%v)", errExitedEarly, c.waitErr)
		default:
		}
		lastErr = c.probe(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-c.exited:
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres to accept connections: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe connects once and checks that the server answering is this one, not
// another server that took the port.
func (c *Cluster) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}
	if dataDir != c.dataDir {
		return fmt.Errorf("port %d is served by another server (data directory %s)", c.port, dataDir)
	}
	return nil
}

// createDatabase creates the configured database unless it exists.
func (c *Cluster) createDatabase(ctx context.Context) error {
	if c.database == Superuser {
		return nil
	}
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %q: %w", c.database, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.database}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") {
		return fmt.Errorf("create database %q: %w", c.database, err)
	}
	return nil
}

// URL returns the connection string of the configured database, e.g.
// postgres://postgres@127.0.0.1:5432/orchestrator?sslmode=disable.
func (c *Cluster) URL() string {
	return c.url(c.database)
}

// AdminURL returns the connection string of the postgres maintenance
// database.
func (c *Cluster) AdminURL() string {
	return c.url(Superuser)
}

func (c *Cluster) url(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on.
func (c *Cluster) Port() int {
	return c.port
}

// LogPath returns the path of the server log.
func (c *Cluster) LogPath() string {
	return c.logPath
}

// Done returns a channel closed when the server process has exited, whether
// through Stop or otherwise.
func (c *Cluster) Done() <-chan struct{} {
	return c.exited
}

// Stop shuts the server down with a fast shutdown (SIGINT to the postmaster:
// open transactions are rolled back) and waits for it to exit. When it has not
// exited once ctx ends or 30 seconds pass, Stop escalates to an immediate
// shutdown (SIGQUIT) and then SIGKILL, and returns an error if it had to kill.
// Stop is idempotent, and returns nil when the server had already exited.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	gone := func() bool {
		select {
		case <-c.exited:
			return true
		default:
			return false
		}
	}
	if gone() {
		c.log.Warn("PostgreSQL had already exited", "status", c.waitErr)
	} else {
		c.log.Info("stopping PostgreSQL", "port", c.port)
	}
	c.stopErr = shutdown(ctx, c.log, c.cmd.Process.Pid, gone)
	c.stopped = true
	return c.stopErr
}
