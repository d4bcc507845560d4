package service_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestServiceHFJobsSecrets: a process that runs commands refuses to start while a secret an hf-jobs mapping of
// the configuration file names is not in its environment; a web process, which sends no Job, does not care.
func TestServiceHFJobsSecrets(t *testing.T) {
	t.Parallel()
	const file = `mappings:
  - name: train
    dataset: acme/support-tickets
    command: [python, train.py]
    executor: hf-jobs
    hf_jobs: {namespace: acme, image: "python:3.12", secrets: [HF_TOKEN, WANDB_API_KEY]}
`
	path := filepath.Join(t.TempDir(), "orchestrator.yaml")
	require.NoError(t, os.WriteFile(path, []byte(file), 0o600))
	cases := []struct {
		name string
		role service.Role
		env  map[string]string
		want string // "" = starts
	}{
		{"Missing", service.RoleAll, map[string]string{"HF_TOKEN": "hf_x"}, `mapping "train": hf_jobs.secrets WANDB_API_KEY not set in the environment`},
		{"MissingWorker", service.RoleWorker, nil, "hf_jobs.secrets HF_TOKEN, WANDB_API_KEY not set"},
		{"MissingWeb", service.RoleWeb, nil, ""},
		{"Set", service.RoleAll, map[string]string{"HF_TOKEN": "hf_x", "WANDB_API_KEY": "w"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _ := dbtest.NewSchema(t)
			svc, err := service.New(service.Config{DatabaseURL: url, Addr: "127.0.0.1:0", Logger: quietLogger,
				WebhookSecret: testSecret, ConfigPath: path, Role: tc.role, Getenv: func(k string) string { return tc.env[k] },
				HFToken: tc.env["HF_TOKEN"]})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, svc.Close(context.Background())) })
			err = svc.Run(context.Background())
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}
