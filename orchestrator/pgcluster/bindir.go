package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNoBinaries is returned (wrapped) by FindBinDir when no PostgreSQL server
// binaries are installed on this machine.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found on PATH, via pg_config --bindir or in /usr/lib/postgresql/*/bin")

// defaultLibRoot is where Debian and Ubuntu install one directory per major
// PostgreSQL version.
const defaultLibRoot = "/usr/lib/postgresql"

// FindBinDir locates a directory holding the PostgreSQL server binaries
// initdb and postgres (pg_ctl is not required). It tries, in order, the
// directory of postgres or initdb found on PATH (symbolic links resolved),
// the output of `pg_config --bindir`, and the highest version in
// /usr/lib/postgresql/*/bin. When none is found it returns an error wrapping
// ErrNoBinaries that names the ways out.
func FindBinDir() (string, error) {
	return findBinDir(os.Getenv("PATH"), defaultLibRoot)
}

// findBinDir implements FindBinDir with the search path and the versioned
// library root as parameters.
func findBinDir(pathEnv, libRoot string) (string, error) {
	for _, name := range []string{"postgres", "initdb"} {
		p, ok := lookPath(pathEnv, name)
		if !ok {
			continue
		}
		if resolved, err := filepath.EvalSymlinks(p); err == nil && hasServerBinaries(filepath.Dir(resolved)) {
			return filepath.Dir(resolved), nil
		}
		if hasServerBinaries(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}

	if pgConfig, ok := lookPath(pathEnv, "pg_config"); ok {
		if dir, err := pgConfigBinDir(pgConfig); err == nil && hasServerBinaries(dir) {
			return dir, nil
		}
	}

	if dir, ok := highestVersionBinDir(libRoot); ok {
		return dir, nil
	}

	return "", fmt.Errorf("%w; install PostgreSQL (e.g. `apt-get install -y postgresql`), "+
		"set DATABASE_URL to an existing server, or start one with `docker compose up`", ErrNoBinaries)
}

// lookPath searches the directories of pathEnv for an executable file name.
func lookPath(pathEnv, name string) (string, bool) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

// isExecutable reports whether p is a regular file with an execute bit set.
func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// hasServerBinaries reports whether dir holds both initdb and postgres.
func hasServerBinaries(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

// pgConfigBinDir runs `pg_config --bindir`.
func pgConfigBinDir(pgConfig string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
	if err != nil {
		return "", fmt.Errorf("run %s --bindir: %w", pgConfig, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// highestVersionBinDir returns libRoot/<version>/bin for the highest version
// directory that holds the server binaries.
func highestVersionBinDir(libRoot string) (string, bool) {
	entries, err := os.ReadDir(libRoot)
	if err != nil {
		return "", false
	}
	type candidate struct {
		version []int
		dir     string
	}
	var candidates []candidate
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		dir := filepath.Join(libRoot, e.Name(), "bin")
		if hasServerBinaries(dir) {
			candidates = append(candidates, candidate{version: v, dir: dir})
		}
	}
	if len(candidates) == 0 {
		return "", false
	}
	best := slices.MaxFunc(candidates, func(a, b candidate) int { return slices.Compare(a.version, b.version) })
	return best.dir, true
}

// parseVersion parses a dotted numeric version such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	parts := strings.Split(s, ".")
	v := make([]int, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}
