package pgcluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFindBinDir(t *testing.T) {
	t.Parallel()

	dir, err := FindBinDir()
	require.NoError(t, err, "this test needs the PostgreSQL server binaries installed")
	require.True(t, hasServerBinaries(dir), "%s lacks initdb or postgres", dir)
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err == nil {
		require.Equal(t, "/usr/lib/postgresql/15/bin", dir)
	}
}

// writeExecutable creates an executable file with the given content.
func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o755))
}

// fakeServerBinaries creates stand-ins for initdb and postgres in dir.
func fakeServerBinaries(t *testing.T, dir string) {
	t.Helper()
	writeExecutable(t, filepath.Join(dir, "initdb"), "#!/bin/sh\n")
	writeExecutable(t, filepath.Join(dir, "postgres"), "#!/bin/sh\n")
}

func TestFindBinDirSearchOrder(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// setup lays out files under root and returns the PATH value and
		// the versioned library root to search, and the expected result
		// (empty for ErrNoBinaries).
		setup func(t *testing.T, root string) (pathEnv, libRoot, want string)
	}{
		{
			name: "nothing installed",
			setup: func(t *testing.T, root string) (string, string, string) {
				return filepath.Join(root, "bin"), filepath.Join(root, "lib"), ""
			},
		},
		{
			name: "path directory",
			setup: func(t *testing.T, root string) (string, string, string) {
				fakeServerBinaries(t, filepath.Join(root, "pg", "bin"))
				fakeServerBinaries(t, filepath.Join(root, "lib", "16", "bin"))
				pathEnv := filepath.Join(root, "empty") + string(os.PathListSeparator) + filepath.Join(root, "pg", "bin")
				return pathEnv, filepath.Join(root, "lib"), filepath.Join(root, "pg", "bin")
			},
		},
		{
			name: "path symlink resolved",
			setup: func(t *testing.T, root string) (string, string, string) {
				realDir := filepath.Join(root, "real", "bin")
				fakeServerBinaries(t, realDir)
				link := filepath.Join(root, "links")
				require.NoError(t, os.MkdirAll(link, 0o755))
				require.NoError(t, os.Symlink(filepath.Join(realDir, "postgres"), filepath.Join(link, "postgres")))
				return link, filepath.Join(root, "lib"), realDir
			},
		},
		{
			name: "pg_config",
			setup: func(t *testing.T, root string) (string, string, string) {
				bin := filepath.Join(root, "server", "bin")
				fakeServerBinaries(t, bin)
				writeExecutable(t, filepath.Join(root, "client", "pg_config"), "#!/bin/sh\necho "+bin+"\n")
				return filepath.Join(root, "client"), filepath.Join(root, "lib"), bin
			},
		},
		{
			name: "highest complete version",
			setup: func(t *testing.T, root string) (string, string, string) {
				lib := filepath.Join(root, "lib")
				fakeServerBinaries(t, filepath.Join(lib, "9.6", "bin"))
				fakeServerBinaries(t, filepath.Join(lib, "13", "bin"))
				writeExecutable(t, filepath.Join(lib, "17", "bin", "psql"), "#!/bin/sh\n")
				require.NoError(t, os.MkdirAll(filepath.Join(lib, "current", "bin"), 0o755))
				return filepath.Join(root, "bin"), lib, filepath.Join(lib, "13", "bin")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pathEnv, libRoot, want := tt.setup(t, t.TempDir())

			got, err := findBinDir(pathEnv, libRoot)
			if want == "" {
				require.ErrorIs(t, err, ErrNoBinaries)
				require.ErrorContains(t, err, "apt-get install -y postgresql")
				require.ErrorContains(t, err, "DATABASE_URL")
				require.ErrorContains(t, err, "docker compose up")
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}
