package dbtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/dockertest/v3"
	"github.com/stretchr/testify/require"
)

// unpullableImage lives in a registry at a closed port of this machine: pulling it fails at once, and asks no
// other machine.
const unpullableImage = "127.0.0.1:1/orchestrator-dbtest/absent:none"

// engineAnswers reports whether a Docker engine answers, the way startContainer asks.
func engineAnswers(t *testing.T) bool {
	t.Helper()
	pool, err := dockertest.NewPool("")
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pool.Client.PingWithContext(ctx) == nil
}

// TestUnpullableImageFallsBack starts a server with TEST_POSTGRES_IMAGE naming an image that cannot be pulled:
// Docker fails naming the image (or says no engine answers), and the server comes from the local binaries.
func TestUnpullableImageFallsBack(t *testing.T) {
	t.Setenv(EnvURL, "")
	t.Setenv(EnvImage, unpullableImage)

	_, err := startContainer()
	require.Error(t, err)
	if engineAnswers(t) {
		require.ErrorContains(t, err, "run "+unpullableImage+": ")
	} else {
		require.ErrorContains(t, err, "Docker")
	}

	s, err := startServer()
	require.NoError(t, err)
	t.Cleanup(s.stop)
	require.Equal(t, sourceLocal, s.source)
	require.NoError(t, ping(s.url))
}

// TestNamedImageRuns runs the image TEST_POSTGRES_IMAGE names, when it is set and an engine answers, connects
// to it and finds the UTF8 encoding: the Docker path itself, which the shared server of these tests may not take when
// TEST_DATABASE_URL is set too.
func TestNamedImageRuns(t *testing.T) {
	image := os.Getenv(EnvImage)
	switch {
	case image != "" && !engineAnswers(t):
		t.Fatalf("%s names %s, but no Docker engine answers: start one, or unset it", EnvImage, image)
	case image == "" && os.Getenv("CI") == "true":
		t.Fatalf("in CI the Docker path must be tested: run the tests through .ci/docker-check, which sets %s", EnvImage)
	case image == "":
		t.Skipf("needs %s and a Docker engine; .ci/docker-check provides both", EnvImage)
	}
	t.Setenv(EnvURL, "")

	s, err := startContainer()
	require.NoError(t, err)
	t.Cleanup(s.stop)
	require.Equal(t, sourceDocker, s.source)
	require.NoError(t, ping(s.url))
	require.NoError(t, execOnce(s.url, "CREATE TABLE docker_path (id int)"))

	// pgx's simple protocol, which the store uses, needs UTF8 as the official image has it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var encoding string
	require.NoError(t, conn.QueryRow(ctx, "SHOW server_encoding").Scan(&encoding))
	require.Equal(t, "UTF8", encoding)
}

func TestSplitImage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		image, repository, tag, err string
	}{
		{image: "postgres:16-alpine", repository: "postgres", tag: "16-alpine"},
		{image: "postgres", repository: "postgres", tag: "latest"},
		{image: "orchestrator-ci/postgresql:15-bookworm", repository: "orchestrator-ci/postgresql", tag: "15-bookworm"},
		{image: "127.0.0.1:5000/pg", repository: "127.0.0.1:5000/pg", tag: "latest"},
		{image: "127.0.0.1:5000/pg:16", repository: "127.0.0.1:5000/pg", tag: "16"},
		{image: "postgres@sha256:abc", err: "without a digest"},
		{image: "postgres:", err: "want repository[:tag]"},
		{image: ":16", err: "want repository[:tag]"},
		{image: "post gres", err: "without a digest or spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			t.Parallel()
			repository, tag, err := splitImage(tt.image)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				require.ErrorContains(t, err, EnvImage)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.repository, repository)
			require.Equal(t, tt.tag, tag)
		})
	}
}
