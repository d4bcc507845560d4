package orchestrator

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestMappingSpecMapping(t *testing.T) {
	t.Parallel()

	t.Run("Settings", func(t *testing.T) {
		t.Parallel()
		notify := []NotifyTarget{{URL: "https://example.com/hook", Format: NotifyFormatSlack}}
		m, err := MappingSpec{
			Name: "a", Dataset: "x/y", Refs: []string{"refs/heads/dev"}, Command: []string{"train"}, Workdir: "/srv",
			Env: map[string]string{"K": "v"}, Timeout: " 90m ", MaxAttempts: 3, QuietPeriod: "2m", MaxWait: "10m",
			Concurrency: 4, OnNewRevision: OnNewRevisionQueue, RunOnBaseline: true, VerifyRevision: true, Queue: "gpu",
			Notify: notify, Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"},
		}.Mapping()
		require.NoError(t, err)
		require.Equal(t, Mapping{
			Name: "a", Dataset: "x/y", Refs: []string{"refs/heads/dev"}, Command: []string{"train"}, Workdir: "/srv",
			Env: map[string]string{"K": "v"}, Timeout: 90 * time.Minute, MaxAttempts: 3, QuietPeriod: 2 * time.Minute,
			MaxWait: 10 * time.Minute, Concurrency: 4, OnNewRevision: OnNewRevisionQueue, RunOnBaseline: true,
			VerifyRevision: true, Queue: "gpu", Notify: notify, Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"},
		}, m)
	})

	t.Run("EmptyIsUnset", func(t *testing.T) {
		t.Parallel()
		m, err := MappingSpec{Name: "a"}.Mapping()
		require.NoError(t, err)
		require.Equal(t, Mapping{Name: "a"}, m, "defaults are the caller's to apply")
	})

	badDurations := []struct {
		name    string
		spec    MappingSpec
		wantErr string
	}{
		{"Timeout", MappingSpec{Timeout: "soon"}, `timeout "soon" is not a duration such as 90m or 2h`},
		{"QuietPeriod", MappingSpec{QuietPeriod: " 5 "}, `quiet_period "5" is not a duration such as 90m or 2h`},
		{"MaxWait", MappingSpec{MaxWait: "1d"}, `max_wait "1d" is not a duration such as 90m or 2h`},
	}
	for _, tc := range badDurations {
		t.Run("Bad"+tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.spec.Mapping()
			require.Equal(t, CodeInvalid, ErrorCode(err))
			require.Equal(t, tc.wantErr, ErrorMessage(err))
		})
	}
}

// TestMappingSpecEncodings checks that the configuration file and the API write a mapping's settings the same
// way, and that the JSON encoding carries only the settings given.
func TestMappingSpecEncodings(t *testing.T) {
	t.Parallel()
	full := MappingSpec{
		Name: "a", Dataset: "x/*", Refs: []string{"refs/heads/main", "refs/tags/v*"}, Command: []string{"python", "train.py"},
		Workdir: "train", Env: map[string]string{"K": "v"}, Timeout: "2h", MaxAttempts: 3, QuietPeriod: "1m", MaxWait: "5m",
		Concurrency: 2, OnNewRevision: OnNewRevisionCancelRunning, RunOnBaseline: true, VerifyRevision: true, Queue: "gpu",
		Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md"},
		Notify: []NotifyTarget{{URL: "https://example.com/hook", Format: NotifyFormatJSON, On: []NotifyEvent{NotifySucceeded}, SecretEnv: "S"}},
	}
	cases := []struct {
		name     string
		yaml     string
		json     string
		want     MappingSpec
		wantJSON string
	}{
		{
			name: "Full",
			yaml: `
name: a
dataset: x/*
refs: [refs/heads/main, refs/tags/v*]
command: [python, train.py]
workdir: train
env: {K: v}
timeout: 2h
max_attempts: 3
quiet_period: 1m
max_wait: 5m
concurrency: 2
on_new_revision: cancel_running
run_on_baseline: true
verify_revision: true
queue: gpu
paths: ["data/**", "**/*.parquet"]
ignore_paths: [README.md]
notify:
  - {url: "https://example.com/hook", format: json, on: [succeeded], secret_env: S}
`,
			json: `{"name":"a","dataset":"x/*","refs":["refs/heads/main","refs/tags/v*"],"command":["python","train.py"],
				"workdir":"train","env":{"K":"v"},"timeout":"2h","max_attempts":3,"quiet_period":"1m","max_wait":"5m",
				"concurrency":2,"on_new_revision":"cancel_running","run_on_baseline":true,"verify_revision":true,"queue":"gpu",
				"paths":["data/**","**/*.parquet"],"ignore_paths":["README.md"],
				"notify":[{"url":"https://example.com/hook","format":"json","on":["succeeded"],"secret_env":"S"}]}`,
			want: full,
			wantJSON: `{"name":"a","dataset":"x/*","refs":["refs/heads/main","refs/tags/v*"],"command":["python","train.py"],` +
				`"workdir":"train","env":{"K":"v"},"timeout":"2h","max_attempts":3,"quiet_period":"1m","max_wait":"5m",` +
				`"concurrency":2,"on_new_revision":"cancel_running","run_on_baseline":true,"verify_revision":true,"queue":"gpu",` +
				`"paths":["data/**","**/*.parquet"],"ignore_paths":["README.md"],` +
				`"notify":[{"url":"https://example.com/hook","format":"json","on":["succeeded"],"secret_env":"S"}]}`,
		},
		{
			name:     "Minimal",
			yaml:     "name: a\ndataset: x/y\ncommand: [\"true\"]\n",
			json:     `{"name":"a","dataset":"x/y","command":["true"]}`,
			want:     MappingSpec{Name: "a", Dataset: "x/y", Command: []string{"true"}},
			wantJSON: `{"name":"a","dataset":"x/y","command":["true"]}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var fromYAML, fromJSON MappingSpec
			require.NoError(t, yaml.Unmarshal([]byte(tc.yaml), &fromYAML))
			require.NoError(t, json.Unmarshal([]byte(tc.json), &fromJSON))
			require.Equal(t, tc.want, fromYAML)
			require.Equal(t, tc.want, fromJSON)
			data, err := json.Marshal(tc.want)
			require.NoError(t, err)
			require.Equal(t, tc.wantJSON, string(data))
		})
	}
}

func TestDurationYAML(t *testing.T) {
	t.Parallel()
	cases := []struct {
		yaml    string
		want    Duration
		wantErr string
	}{
		{"timeout: 90m", "90m", ""},
		{"timeout: 0", "0", ""},
		{"timeout: ~", "", ""},
		{"timeout: soon", "", `line 1: "soon" is not a duration such as 90m or 2h`},
		{"timeout: 90", "", `line 1: "90" is not a duration such as 90m or 2h`},
		{"\ntimeout: [1h]", "", "line 2: must be a duration such as 90m or 2h"},
	}
	for _, tc := range cases {
		var v struct {
			Timeout Duration `yaml:"timeout"`
		}
		err := yaml.Unmarshal([]byte(tc.yaml), &v)
		if tc.wantErr != "" {
			require.EqualError(t, err, tc.wantErr, tc.yaml)
			continue
		}
		require.NoError(t, err, tc.yaml)
		require.Equal(t, tc.want, v.Timeout, tc.yaml)
	}
	require.Equal(t, Duration("2h0m0s"), DurationOf(2*time.Hour))
	require.Equal(t, Duration("0s"), DurationOf(0))
}
