package orchestrator_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// hfMapping returns a valid mapping that runs on Hugging Face Jobs, changed by f.
func hfMapping(f func(m *orchestrator.Mapping)) orchestrator.Mapping {
	m := orchestrator.Mapping{
		Name: "train", Dataset: "acme/support-tickets", Command: []string{"python", "train.py"},
		Executor: orchestrator.ExecutorHFJobs,
		HFJobs: &orchestrator.HFJobsSettings{
			Namespace: "acme", Image: "python:3.12", Secrets: []string{"HF_TOKEN"},
			MountDataset: "/data", Labels: map[string]string{"team": "nlp"},
		},
	}
	if f != nil {
		f(&m)
	}
	return m
}

func TestMappingExecutorValidate(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", orchestrator.HFJobsLabelMaxLen+1)
	cases := []struct {
		name string
		edit func(m *orchestrator.Mapping)
		want string // "" = valid; else a part of the message
	}{
		{"Valid", nil, ""},
		{"LocalDefault", func(m *orchestrator.Mapping) { m.Executor, m.HFJobs = "", nil }, ""},
		{"Space", func(m *orchestrator.Mapping) { m.HFJobs.Image, m.HFJobs.Space = "", "acme/trainer" }, ""},
		{"Flavor", func(m *orchestrator.Mapping) { m.HFJobs.Flavor = "a10g-large" }, ""},
		{"FlavorH200", func(m *orchestrator.Mapping) { m.HFJobs.Flavor = "h200" }, ""},
		{"FlavorCPUXL", func(m *orchestrator.Mapping) { m.HFJobs.Flavor = "cpu-xl" }, ""},
		{"NoLabelsNoSecrets", func(m *orchestrator.Mapping) { m.HFJobs.Labels, m.HFJobs.Secrets, m.HFJobs.MountDataset = nil, nil, "" }, ""},
		{"UnknownExecutor", func(m *orchestrator.Mapping) { m.Executor = "k8s" }, `executor "k8s" must be`},
		{"SettingsWithLocal", func(m *orchestrator.Mapping) { m.Executor = orchestrator.ExecutorLocal }, "hf_jobs is set but executor is \"local\""},
		{"SettingsMissing", func(m *orchestrator.Mapping) { m.HFJobs = nil }, "executor hf-jobs needs hf_jobs"},
		{"Workdir", func(m *orchestrator.Mapping) { m.Workdir = "/srv" }, "workdir is not allowed with executor hf-jobs"},
		{"NoNamespace", func(m *orchestrator.Mapping) { m.HFJobs.Namespace = "" }, "hf_jobs.namespace must name"},
		{"BadNamespace", func(m *orchestrator.Mapping) { m.HFJobs.Namespace = "acme/x" }, `hf_jobs.namespace "acme/x" is not`},
		{"NeitherImageNorSpace", func(m *orchestrator.Mapping) { m.HFJobs.Image = "" }, "hf_jobs needs image"},
		{"ImageAndSpace", func(m *orchestrator.Mapping) { m.HFJobs.Space = "acme/trainer" }, "both set"},
		{"ImageWithSpace", func(m *orchestrator.Mapping) { m.HFJobs.Image = "python 3" }, "hf_jobs.image"},
		{"SpaceNotOwnerName", func(m *orchestrator.Mapping) { m.HFJobs.Image, m.HFJobs.Space = "", "trainer" }, `hf_jobs.space "trainer" must be owner/name`},
		{"UnknownFlavor", func(m *orchestrator.Mapping) { m.HFJobs.Flavor = "h9000" }, `hf_jobs.flavor "h9000" is not a known flavor: one of cpu-basic, cpu-upgrade`},
		{"SecretName", func(m *orchestrator.Mapping) { m.HFJobs.Secrets = []string{"1TOKEN"} }, `hf_jobs.secrets name "1TOKEN"`},
		{"SecretTwice", func(m *orchestrator.Mapping) { m.HFJobs.Secrets = []string{"A", "A"} }, `hf_jobs.secrets names "A" twice`},
		{"SecretReserved", func(m *orchestrator.Mapping) { m.HFJobs.Secrets = []string{"RUN_ID"} }, `hf_jobs.secrets name "RUN_ID" is set by the orchestrator`},
		{"SecretAlsoEnv", func(m *orchestrator.Mapping) { m.Env = map[string]string{"HF_TOKEN": "x"} }, `"HF_TOKEN" is also in env`},
		{"MountRelative", func(m *orchestrator.Mapping) { m.HFJobs.MountDataset = "data" }, `hf_jobs.mount_dataset "data" must be an absolute path`},
		{"MountRoot", func(m *orchestrator.Mapping) { m.HFJobs.MountDataset = "/" }, `hf_jobs.mount_dataset "/"`},
		{"LabelKeyChars", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{"a b": "x"} }, `hf_jobs.labels key "a b"`},
		{"LabelKeyEmpty", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{"": "x"} }, `hf_jobs.labels key ""`},
		{"LabelKeyLong", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{long: "x"} }, "hf_jobs.labels key"},
		{"LabelValueChars", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{"team": "a/b"} }, `hf_jobs.labels team value "a/b"`},
		{"LabelValueLong", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{"team": long} }, "hf_jobs.labels team value"},
		{"LabelReserved", func(m *orchestrator.Mapping) { m.HFJobs.Labels = map[string]string{orchestrator.LabelRun: "1"} }, `hf_jobs.labels key "orchestrator-run" is set by the orchestrator`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := hfMapping(tc.edit).WithDefaults()
			err := m.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err), "%v", err)
			require.Contains(t, orchestrator.ErrorMessage(err), tc.want)
		})
	}
}

func TestMappingExecutorDefaults(t *testing.T) {
	t.Parallel()
	local := orchestrator.Mapping{Name: "m"}.WithDefaults()
	require.Equal(t, orchestrator.ExecutorLocal, local.Executor)
	require.Nil(t, local.HFJobs)

	m := hfMapping(nil)
	hf := m.WithDefaults()
	require.Equal(t, orchestrator.HFJobsFlavorDefault, hf.HFJobs.Flavor)
	require.Empty(t, m.HFJobs.Flavor, "the defaults are applied to a copy")
}

func TestMappingMissingSecrets(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HF_TOKEN": "hf_x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct {
		name    string
		secrets []string
		want    []string
	}{
		{"AllSet", []string{"HF_TOKEN"}, nil},
		{"Unset", []string{"HF_TOKEN", "WANDB_API_KEY"}, []string{"WANDB_API_KEY"}},
		{"EmptyIsMissing", []string{"EMPTY", "HF_TOKEN"}, []string{"EMPTY"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := hfMapping(func(m *orchestrator.Mapping) { m.HFJobs.Secrets = tc.secrets })
			require.Equal(t, tc.want, m.MissingSecrets(lookup))
		})
	}
	local := orchestrator.Mapping{}
	require.Nil(t, local.MissingSecrets(lookup))
}

// TestMappingExecutorConfig: the settings as written in the configuration file are parsed, checked with the
// mapping's name in the message, stored by the sync, and read back by every read and by the copy that decides
// deliveries.
func TestMappingExecutorConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const file = `mappings:
  - name: train
    dataset: acme/support-tickets
    command: [python, train.py]
    executor: hf-jobs
    hf_jobs:
      namespace: acme
      space: acme/trainer
      flavor: t4-small
      secrets: [HF_TOKEN, WANDB_API_KEY]
      mount_dataset: /data
      labels: {team: nlp}
  - name: local
    dataset: acme/other
    command: ["true"]
`
	mappings, err := orchestrator.ParseConfig([]byte(file), t.TempDir())
	require.NoError(t, err)
	want := &orchestrator.HFJobsSettings{Namespace: "acme", Space: "acme/trainer", Flavor: "t4-small",
		Secrets: []string{"HF_TOKEN", "WANDB_API_KEY"}, MountDataset: "/data", Labels: map[string]string{"team": "nlp"}}
	require.Equal(t, orchestrator.ExecutorHFJobs, mappings[0].Executor)
	require.Equal(t, want, mappings[0].HFJobs)
	require.Equal(t, orchestrator.ExecutorLocal, mappings[1].Executor)

	b := setup(t)
	_, err = b.store.MappingSync(ctx, mappings)
	require.NoError(t, err)
	got, err := b.store.MappingGetByName(ctx, "train")
	require.NoError(t, err)
	require.Equal(t, orchestrator.ExecutorHFJobs, got.Executor)
	require.Equal(t, want, got.HFJobs)
	local, err := b.store.MappingGetByName(ctx, "local")
	require.NoError(t, err)
	require.Equal(t, orchestrator.ExecutorLocal, local.Executor)
	require.Nil(t, local.HFJobs)
	require.Zero(t, count(t, b.pool, `SELECT count(*) FROM mappings WHERE hf_jobs IS NOT NULL AND executor = 'local'`))
	cached, err := b.store.CachedMappings(ctx)
	require.NoError(t, err)
	require.Equal(t, want, cached[1].HFJobs, "the copy that decides deliveries, by name")
	summaries, err := b.store.MappingSummaryList(ctx)
	require.NoError(t, err)
	require.Equal(t, want, summaries[1].HFJobs)

	// The file changes the mapping back to local: the settings go.
	_, err = b.store.MappingSync(ctx, mappings[1:2])
	require.NoError(t, err)
	back := mappings[0]
	back.Executor, back.HFJobs = orchestrator.ExecutorLocal, nil
	_, err = b.store.MappingSync(ctx, []orchestrator.Mapping{back})
	require.NoError(t, err)
	got, err = b.store.MappingGetByName(ctx, "train")
	require.NoError(t, err)
	require.Equal(t, orchestrator.ExecutorLocal, got.Executor)
	require.Nil(t, got.HFJobs)

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		cases := []struct{ name, file, want string }{
			{"UnknownKey", strings.Replace(file, "flavor: t4-small", "hardware: t4-small", 1), "field hardware not found"},
			{"UnknownFlavor", strings.Replace(file, "flavor: t4-small", "flavor: t5", 1), `mapping "train" (line 2): hf_jobs.flavor "t5" is not a known flavor`},
			{"Workdir", strings.Replace(file, "executor: hf-jobs", "executor: hf-jobs\n    workdir: /srv", 1), `mapping "train" (line 2): workdir is not allowed`},
			{"NoSettings", "mappings:\n  - name: x\n    dataset: a/b\n    command: [x]\n    executor: hf-jobs\n", `mapping "x" (line 2): executor hf-jobs needs hf_jobs`},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := orchestrator.ParseConfig([]byte(tc.file), t.TempDir())
				require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err), "%v", err)
				require.Contains(t, err.Error(), tc.want)
			})
		}
	})

	t.Run("LoadConfig", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "orchestrator.yaml")
		require.NoError(t, os.WriteFile(path, []byte(file), 0o600))
		loaded, err := orchestrator.LoadConfig(path)
		require.NoError(t, err)
		require.Equal(t, want, loaded[0].HFJobs)
	})
}

// TestMappingExecutorAPIStore: the settings of an API mapping are validated by the create and the update,
// stored, and read back.
func TestMappingExecutorAPIStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	created, err := b.store.MappingCreate(ctx, hfMapping(nil))
	require.NoError(t, err)
	require.Equal(t, orchestrator.ExecutorHFJobs, created.Executor)
	require.Equal(t, "cpu-basic", created.HFJobs.Flavor)

	_, err = b.store.MappingUpdate(ctx, hfMapping(func(m *orchestrator.Mapping) { m.HFJobs.Flavor = "nope" }))
	require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
	updated, err := b.store.MappingUpdate(ctx, hfMapping(func(m *orchestrator.Mapping) {
		m.HFJobs.Flavor, m.HFJobs.Labels = "a100-large", nil
	}))
	require.NoError(t, err)
	require.Equal(t, "a100-large", updated.HFJobs.Flavor)
	got, err := b.store.MappingGetByName(ctx, "train")
	require.NoError(t, err)
	require.Equal(t, updated.HFJobs, got.HFJobs)
	require.Empty(t, got.HFJobs.Labels)

	_, err = b.store.MappingUpdate(ctx, hfMapping(func(m *orchestrator.Mapping) { m.Executor, m.HFJobs = "", nil }))
	require.NoError(t, err)
	got, err = b.store.MappingGetByName(ctx, "train")
	require.NoError(t, err)
	require.Equal(t, orchestrator.ExecutorLocal, got.Executor)
	require.Nil(t, got.HFJobs)
}
