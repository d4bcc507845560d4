package orchestrator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()

	t.Run("FullMapping", func(t *testing.T) {
		t.Parallel()
		mappings, err := ParseConfig([]byte(`
mappings:
  - name: ticket-classifier
    dataset: acme/support-tickets
    refs: ["refs/heads/main", "refs/tags/*"]
    command: ["python", "train.py", "--revision", "${DATASET_REVISION}"]
    workdir: ./trainers/tickets
    env: {WANDB_PROJECT: tickets}
    timeout: 2h
    max_attempts: 3
    paths: ["data/**", "**/*.parquet"]
    ignore_paths: ["README.md", "**/*.md"]
`), "/srv/config")
		require.NoError(t, err)
		require.Len(t, mappings, 1)
		m := mappings[0]
		require.Equal(t, "ticket-classifier", m.Name)
		require.Equal(t, []string{"refs/heads/main", "refs/tags/*"}, m.Refs)
		require.Equal(t, "/srv/config/trainers/tickets", m.Workdir)
		require.Equal(t, map[string]string{"WANDB_PROJECT": "tickets"}, m.Env)
		require.Equal(t, 2*time.Hour, m.Timeout)
		require.Equal(t, 3, m.MaxAttempts)
		require.Equal(t, PathFilter{Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md", "**/*.md"}}, m.PathFilter())
		require.Equal(t, SourceFile, m.Source)
		require.True(t, m.Enabled)
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		mappings, err := ParseConfig([]byte("mappings:\n  - name: a\n    dataset: acme/*\n    command: [true]\n"), "/")
		require.NoError(t, err)
		require.Equal(t, RefsDefault, mappings[0].Refs)
		require.Equal(t, TimeoutDefault, mappings[0].Timeout)
		require.Equal(t, MaxAttemptsDefault, mappings[0].MaxAttempts)
		require.Empty(t, mappings[0].Workdir)
		require.True(t, mappings[0].PathFilter().Empty(), "no paths: every file counts")
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		mappings, err := ParseConfig([]byte(""), "/")
		require.NoError(t, err)
		require.Empty(t, mappings)
	})

	errorCases := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"UnknownKey", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    comand: [false]\n", "line 5: field comand not found"},
		{"UnknownTopLevelKey", "mapings: []\n", "field mapings not found"},
		{"EmptyCommand", "mappings:\n  - name: a\n    dataset: x/y\n    command: []\n", `mapping "a" (line 2): command must be a non-empty list`},
		{"MissingCommand", "mappings:\n  - name: a\n    dataset: x/y\n", `mapping "a" (line 2): command must be`},
		{"EmptyProgram", "mappings:\n  - name: a\n    dataset: x/y\n    command: [\"\"]\n", "command must be a non-empty list"},
		{"BadDatasetGlob", "mappings:\n  - name: a\n    dataset: \"x/[y\"\n    command: [true]\n", `dataset "x/[y" is not a valid pattern`},
		{"BadRefGlob", "mappings:\n  - name: a\n    dataset: x/y\n    refs: [\"refs/heads/[\"]\n    command: [true]\n", `ref "refs/heads/[" is not a valid pattern`},
		{"RefWithoutPrefix", "mappings:\n  - name: a\n    dataset: x/y\n    refs: [main]\n    command: [true]\n", `ref "main" must start with refs/`},
		{"BadDuration", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    timeout: two hours\n", `line 5: "two hours" is not a duration`},
		{"NegativeDuration", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    timeout: -5m\n", "timeout -5m0s must be above 0"},
		{"TooLongTimeout", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    timeout: 1000h\n", "at most 168h0m0s"},
		{"DuplicateName", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n  - name: a\n    dataset: x/z\n    command: [true]\n", `mapping "a" (line 5): duplicate name, first declared on line 2`},
		{"BadName", "mappings:\n  - name: \"a b\"\n    dataset: x/y\n    command: [true]\n", `name "a b" must be 1 to 100 letters`},
		{"MissingName", "mappings:\n  - dataset: x/y\n    command: [true]\n", `mapping 1 (line 2): name "" must be`},
		{"MissingDataset", "mappings:\n  - name: a\n    command: [true]\n", "dataset must not be empty"},
		{"ReservedEnv", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    env: {DATASET_REVISION: x}\n", `env name "DATASET_REVISION" is set by the orchestrator`},
		{"ReservedTraceEnv", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    env: {TRACEPARENT: x}\n", `env name "TRACEPARENT" is set by the orchestrator`},
		{"BadEnvName", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    env: {\"1X\": x}\n", `env name "1X" must be letters`},
		{"ZeroAttempts", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    max_attempts: -1\n", "max_attempts -1 must be between 1 and 100"},
		{"NotYAML", "mappings: [\n", "invalid configuration"},
		{"WrongType", "mappings:\n  - name: a\n    dataset: x/y\n    command: python train.py\n", "cannot unmarshal"},
		{"NotAMapping", "mappings:\n  - 1\n", "line 2: cannot unmarshal !!int `1` into orchestrator.mappingSpec"},
		{"BadPathGlob", "mappings:\n  - name: ticket-classifier\n    dataset: x/y\n    command: [true]\n    ignore_paths: [\"[\"]\n",
			`mapping "ticket-classifier" (line 2): ignore_paths[0] "[": syntax error in pattern`},
		{"EmptyPath", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    paths: [\"data/**\", \"\"]\n",
			`mapping "a" (line 2): paths[1] "": must not be empty`},
		{"PathsNotAList", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    paths: data/**\n", "line 5: cannot unmarshal"},
		{"DurationNotAString", "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    max_wait: {a: 1}\n", "line 5: must be a duration such as 90m or 2h"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(tc.yaml), "/")
			require.Error(t, err)
			require.Equal(t, CodeInvalid, ErrorCode(err))
			require.Contains(t, ErrorMessage(err), tc.wantErr)
		})
	}
}

func TestMappingMatching(t *testing.T) {
	t.Parallel()
	m := Mapping{Dataset: "acme/*", Refs: []string{"refs/heads/main", "refs/tags/v*"}}
	cases := []struct {
		dataset, ref     string
		wantDS, wantRefs bool
	}{
		{"acme/tickets", "refs/heads/main", true, true},
		{"acme/tickets", "refs/tags/v2", true, true},
		{"acme/tickets", "refs/heads/dev", true, false},
		{"acme/a/b", "refs/pr/1", false, false},
		{"other/tickets", "refs/convert/parquet", false, false},
	}
	for _, tc := range cases {
		require.Equal(t, tc.wantDS, m.MatchesDataset(tc.dataset), tc.dataset)
		require.Equal(t, tc.wantRefs, m.WatchesRef(tc.ref), tc.ref)
	}
}
