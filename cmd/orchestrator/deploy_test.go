package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestDockerCompose checks docker-compose.yml, which no engine runs here: the services, the health-gated start,
// the environment the orchestrator needs, and that the files it mounts and the commands it runs exist.
func TestDockerCompose(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       string            `yaml:"build"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	require.NoError(t, dec.Decode(&compose))

	pg, ok := compose.Services["postgres"]
	require.True(t, ok)
	require.Contains(t, pg.Healthcheck.Test, "pg_isready -U orchestrator -d orchestrator")
	require.Contains(t, compose.Volumes, "pgdata")

	app, ok := compose.Services["orchestrator"]
	require.True(t, ok)
	require.Equal(t, ".", app.Build)
	require.Equal(t, "service_healthy", app.DependsOn["postgres"].Condition)
	require.Contains(t, app.Environment["DATABASE_URL"], "@postgres:5432/orchestrator")
	require.Contains(t, app.Environment["DATABASE_URL"], "postgres://"+pg.Environment["POSTGRES_USER"]+":"+pg.Environment["POSTGRES_PASSWORD"]+"@")
	require.Contains(t, app.Environment["HUGGINGFACE_WEBHOOK_SECRET"], "${HUGGINGFACE_WEBHOOK_SECRET:?")
	require.Equal(t, []string{"8080:8080"}, app.Ports)
	require.Equal(t, []string{"CMD", "orchestrator", "healthcheck"}, app.Healthcheck.Test)

	// The mounted example config is valid and is where ORCHESTRATOR_CONFIG says.
	require.Equal(t, []string{"./examples:/app/examples:ro"}, app.Volumes)
	_, err = orchestrator.LoadConfig(filepath.Join(root, "examples", "orchestrator.yaml"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(app.Environment["ORCHESTRATOR_CONFIG"], "/app/examples/"))
}

// TestDockerfile checks that the image builds the command with the Go version go.mod asks for.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	require.NotNil(t, goVersion)
	require.Contains(t, string(dockerfile), "FROM golang:"+string(goVersion[1])+"-")
	require.Contains(t, string(dockerfile), "go build -trimpath -ldflags=\"-s -w\" -o /out/orchestrator ./cmd/orchestrator")
	require.Contains(t, string(dockerfile), `CMD ["serve"]`)
}
