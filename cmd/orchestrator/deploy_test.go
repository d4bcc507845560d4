package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// composeService is the part of a docker-compose.yml service the tests read.
type composeService struct {
	Image         string            `yaml:"image"`
	Build         string            `yaml:"build"`
	ContainerName string            `yaml:"container_name"`
	Environment   map[string]string `yaml:"environment"`
	Volumes       []string          `yaml:"volumes"`
	Ports         []string          `yaml:"ports"`
	DependsOn     map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
	Deploy          struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// TestDockerCompose checks docker-compose.yml (.ci/docker-check runs it on an engine): PostgreSQL and its health-gated start,
// the web and worker services with their roles and environment, and that the configuration they mount exists,
// is valid and only names queues the workers serve.
func TestDockerCompose(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]composeService `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	require.NoError(t, dec.Decode(&compose))

	// The comment at the top says how to start it and how to scale the workers.
	for _, command := range []string{
		"HUGGINGFACE_WEBHOOK_SECRET=your-secret docker compose up --build",
		"docker compose up --scale worker=3",
	} {
		require.True(t, strings.Contains(string(data), command), "the comment at the top lacks %q", command)
	}

	services := make([]string, 0, len(compose.Services))
	for name := range compose.Services {
		services = append(services, name)
	}
	require.ElementsMatch(t, []string{"postgres", "web", "worker"}, services)

	pg := compose.Services["postgres"]
	require.Equal(t, "${POSTGRES_IMAGE:-postgres:16}", pg.Image, "the official image unless POSTGRES_IMAGE names another")
	require.Contains(t, pg.Healthcheck.Test, "pg_isready -U orchestrator -d orchestrator")
	require.Contains(t, compose.Volumes, "pgdata")
	require.Contains(t, pg.Volumes, "pgdata:/var/lib/postgresql/data")
	databaseURL := "postgres://" + pg.Environment["POSTGRES_USER"] + ":" + pg.Environment["POSTGRES_PASSWORD"] +
		"@postgres:5432/" + pg.Environment["POSTGRES_DB"]

	const exampleMount = "./examples:/app/examples:ro"
	// hostConfig is where a configuration path inside the containers is in the repository.
	hostConfig := func(inContainer string) string {
		return filepath.Join(root, "examples", strings.TrimPrefix(inContainer, "/app/examples/"))
	}
	tests := []struct {
		service    string
		role       string
		queues     string
		ports      []string
		adminToken string
		// runsCommands: on stop, running commands get SIGTERM and the kill grace, and the server its shutdown
		// timeout; the container must outlive both.
		runsCommands bool
	}{
		{service: "web", role: "web", ports: []string{"${ORCHESTRATOR_PUBLISH:-8080}:8080"}, adminToken: "${ORCHESTRATOR_ADMIN_TOKEN:-}"},
		{service: "worker", role: "worker", queues: "runs", runsCommands: true},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			app, ok := compose.Services[tt.service]
			require.True(t, ok)
			require.Equal(t, ".", app.Build)
			require.Empty(t, app.ContainerName, "a fixed container name prevents --scale")
			require.Equal(t, "service_healthy", app.DependsOn["postgres"].Condition)
			require.Equal(t, []string{"CMD", "orchestrator", "healthcheck"}, app.Healthcheck.Test)
			require.Equal(t, tt.ports, app.Ports)

			env := app.Environment
			require.Equal(t, tt.role, env["ORCHESTRATOR_ROLE"])
			require.Equal(t, tt.queues, env["ORCHESTRATOR_QUEUES"])
			require.Equal(t, tt.adminToken, env["ORCHESTRATOR_ADMIN_TOKEN"])
			require.True(t, strings.HasPrefix(env["DATABASE_URL"], databaseURL+"?"), env["DATABASE_URL"])
			require.True(t, strings.HasPrefix(env["HUGGINGFACE_WEBHOOK_SECRET"], "${HUGGINGFACE_WEBHOOK_SECRET:?"))
			for name := range env {
				require.True(t, strings.Contains(string(readme), "`"+name+"`"), "%s is not documented in README.md", name)
			}

			// Web and worker alike sync the mounted mappings file at start; the worker runs its commands.
			require.Equal(t, []string{exampleMount}, app.Volumes)
			require.True(t, strings.HasPrefix(env["ORCHESTRATOR_CONFIG"], "/app/examples/"), env["ORCHESTRATOR_CONFIG"])
			_, err := orchestrator.LoadConfig(hostConfig(env["ORCHESTRATOR_CONFIG"]))
			require.NoError(t, err)

			if tt.runsCommands {
				killGrace := jobs.KillGraceDefault
				if v, ok := env["ORCHESTRATOR_KILL_GRACE"]; ok {
					killGrace, err = time.ParseDuration(v)
					require.NoError(t, err)
				}
				stop, err := time.ParseDuration(app.StopGracePeriod)
				require.NoError(t, err, "stop_grace_period")
				require.GreaterOrEqual(t, stop, killGrace+shutdownTimeout)
			}
		})
	}

	// Both kinds of process see the same database, secret and mappings.
	web, worker := compose.Services["web"], compose.Services["worker"]
	for _, name := range []string{"DATABASE_URL", "HUGGINGFACE_WEBHOOK_SECRET", "ORCHESTRATOR_CONFIG"} {
		require.Equal(t, web.Environment[name], worker.Environment[name], name)
	}
	require.GreaterOrEqual(t, worker.Deploy.Replicas, 1)

	// Every queue the example mappings name is served by the workers, or its runs would never start.
	mappings, err := orchestrator.LoadConfig(hostConfig(worker.Environment["ORCHESTRATOR_CONFIG"]))
	require.NoError(t, err)
	require.NotEmpty(t, mappings)
	served := strings.Split(worker.Environment["ORCHESTRATOR_QUEUES"], ",")
	for _, m := range mappings {
		require.Contains(t, served, m.Queue, "mapping %s", m.Name)
	}
}

// TestDockerfile checks that the image builds the command with the Go version go.mod asks for, runs it as a
// user of its own and checks its health. .ci/docker-check builds and runs it.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	require.NotNil(t, goVersion)
	// The base images are build arguments whose defaults are the official images.
	require.Contains(t, string(dockerfile), "ARG GO_IMAGE=golang:"+string(goVersion[1])+"-bookworm\n")
	require.Contains(t, string(dockerfile), "ARG BASE_IMAGE=debian:bookworm-slim\n")
	require.Contains(t, string(dockerfile), "FROM ${GO_IMAGE} AS build\n")
	require.Contains(t, string(dockerfile), "FROM ${BASE_IMAGE}\n")
	// Not root, and healthy only when the server answers.
	require.Contains(t, string(dockerfile), "USER orchestrator\n")
	require.Regexp(t, `(?m)^HEALTHCHECK .*CMD \["orchestrator", "healthcheck"\]$`, string(dockerfile))
	require.Contains(t, string(dockerfile), "go build -trimpath -ldflags=\"-s -w\" -o /out/orchestrator ./cmd/orchestrator")
	require.Contains(t, string(dockerfile), `CMD ["serve"]`)
}
