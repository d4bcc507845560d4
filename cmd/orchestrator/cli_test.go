package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
	"github.com/retrainhq/orchestrator/web/api"
)

// cliToken is the admin token of the server the CLI tests start.
const cliToken = "cli-token"

// cliGetenv returns an environment pointing the CLI at base with the given admin token.
func cliGetenv(base, token string) func(string) string {
	env := map[string]string{"ORCHESTRATOR_URL": base, "ORCHESTRATOR_ADMIN_TOKEN": token}
	return func(k string) string { return env[k] }
}

// cliRun runs the command line and returns its exit code, stdout and stderr.
func cliRun(getenv func(string) string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, getenv, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// cliOK runs the command line, requires it to succeed, and returns its stdout.
func cliOK(t *testing.T, getenv func(string) string, args ...string) string {
	t.Helper()
	code, stdout, stderr := cliRun(getenv, args...)
	require.Equal(t, 0, code, "%v: %s", args, stderr)
	require.Empty(t, stderr, "%v", args)
	return stdout
}

// cliShow returns the run as "runs show --json" prints it.
func cliShow(t *testing.T, getenv func(string) string, id int64) api.RunDetail {
	t.Helper()
	var r api.RunDetail
	require.NoError(t, json.Unmarshal([]byte(cliOK(t, getenv, "runs", "show", strconv.FormatInt(id, 10), "--json")), &r))
	return r
}

// cliWait polls "runs show" until the run reaches one of statuses.
func cliWait(t *testing.T, getenv func(string) string, id int64, statuses ...orchestrator.RunStatus) api.RunDetail {
	t.Helper()
	var r api.RunDetail
	require.Eventually(t, func() bool {
		r = cliShow(t, getenv, id)
		for _, s := range statuses {
			if r.Status == s {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "run %d never reached %v", id, statuses)
	return r
}

// cliDeliver posts a push of sha on dataset's main branch and returns the one run it queued.
func cliDeliver(t *testing.T, base, dataset, sha string) int64 {
	t.Helper()
	body := `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"` + dataset +
		`","id":"66a1f0c2b9e4d3a1f2c3d4e5"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,"newSha":"` + sha + `"}]}`
	answer := postDelivery(t, base, body)
	runs, ok := answer["runs"].([]any)
	require.True(t, ok, "answer: %v", answer)
	require.Len(t, runs, 1, "answer: %v", answer)
	return int64(runs[0].(float64))
}

// startCLIServer starts the whole orchestrator in-process with an admin token that guards reads too, and one
// mapping declared in a configuration file.
func startCLIServer(t *testing.T) string {
	t.Helper()
	url, _ := dbtest.NewSchema(t)
	cfgPath := writeConfig(t, t.TempDir(), `
mappings:
  - name: from-file
    dataset: acme/declared
    command: ["true"]
`)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfgPath, DatabaseURL: url, WebhookSecret: e2eSecret,
		AdminToken: cliToken, ProtectReads: true, MaxBodyBytes: 1 << 20, MaxWorkers: 4, KillGrace: time.Second,
		Logger: errorLogger()})
	return "http://" + svc.Addr()
}

// TestCLI drives the runs and mappings commands against the whole orchestrator: a mapping registered from the
// command line, a delivery that runs it, the run followed to success, retried, a long run cancelled, the
// mapping disabled, and the answers the server refuses.
func TestCLI(t *testing.T) {
	t.Parallel()
	base := startCLIServer(t)
	env := cliGetenv(base, cliToken)

	// Register a mapping: the command is the argv after --, ${DATASET_REVISION} is left for the server.
	out := cliOK(t, env, "mappings", "add", "cli-train", "--dataset", "acme/cli", "--ref", "refs/heads/main",
		"--env", "GREETING=hi", "--timeout", "30s", "--max-attempts", "1", "--path", "data/**", "--path", "**/*.parquet",
		"--ignore-path", "README.md",
		"--", "sh", "-c", "echo $GREETING trained $1", "sh", "${DATASET_REVISION}")
	require.Contains(t, out, "mapping cli-train created")
	require.Contains(t, out, "\npaths:        data/**, **/*.parquet\n")
	require.Contains(t, out, "\nignore_paths: README.md\n")
	require.Contains(t, out, `command:      sh -c 'echo $GREETING trained $1' sh '${DATASET_REVISION}'`)
	require.Contains(t, out, "env:          GREETING=hi")

	out = cliOK(t, env, "mappings", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Regexp(t, `^NAME\s+DATASET\s+REFS\s+SOURCE\s+ENABLED\s+TIMEOUT\s+COMMAND$`, lines[0])
	require.Regexp(t, `^cli-train\s+acme/cli\s+refs/heads/main\s+api\s+yes\s+30s\s+sh -c 'echo \$GREETING trained \$1' sh '\$\{DATASET_REVISION\}'$`, lines[1])
	require.Regexp(t, `^from-file\s+acme/declared\s+refs/heads/main\s+file\s+yes\s+6h\s+true$`, lines[2])

	var shown api.MappingResult
	require.NoError(t, json.Unmarshal([]byte(cliOK(t, env, "mappings", "show", "cli-train", "--json")), &shown))
	require.Equal(t, []string{"sh", "-c", "echo $GREETING trained $1", "sh", "${DATASET_REVISION}"}, shown.Mapping.Command)
	require.Equal(t, map[string]string{"GREETING": "hi"}, shown.Mapping.Env)
	require.Equal(t, orchestrator.Duration("30s"), shown.Mapping.Timeout)
	require.Equal(t, 1, shown.Mapping.MaxAttempts)
	require.Equal(t, []string{"data/**", "**/*.parquet"}, shown.Mapping.Paths)
	require.Equal(t, []string{"README.md"}, shown.Mapping.IgnorePaths)
	require.Contains(t, cliOK(t, env, "mappings", "show", "cli-train"), "source:       api")

	// A delivery runs it, pinned to the new commit.
	sha := strings.Repeat("a1", 20)
	id := cliDeliver(t, base, "acme/cli", sha)
	out = cliOK(t, env, "runs", "list", "--mapping", "cli-train")
	require.Regexp(t, `(?m)^ID\s+STATUS\s+MAPPING\s+DATASET\s+REF\s+REVISION\s+ATTEMPT\s+CREATED$`, out)
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+\w+\s+cli-train\s+acme/cli\s+refs/heads/main\s+%s\s+[01]/1\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`,
		id, sha[:12]), out)
	require.NotContains(t, out, "more:")

	r := cliWait(t, env, id, orchestrator.RunSucceeded, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSucceeded, r.Status, r.Error)
	require.Equal(t, "hi trained "+sha+"\n", r.Log)
	out = cliOK(t, env, "runs", "show", strconv.FormatInt(id, 10))
	require.Contains(t, out, "status:       succeeded\n")
	require.Contains(t, out, "revision:     "+sha+"\n")
	require.Contains(t, out, "attempt:      1/1\n")
	require.Contains(t, out, "exit_code:    0\n")
	require.Contains(t, out, "retry_of:     -\n")
	require.Contains(t, out, "argv: sh -c 'echo $GREETING trained $1' sh "+sha+"\n")
	require.Contains(t, out, fmt.Sprintf("--- log (last %d bytes) ---\nhi trained %s\n", len(r.Log), sha))

	// Retry makes a new run of the same revision.
	out = cliOK(t, env, "runs", "retry", strconv.FormatInt(id, 10))
	var retryID int64
	_, err := fmt.Sscanf(out, "run %d queued (retry of "+strconv.FormatInt(id, 10)+")\n", &retryID)
	require.NoError(t, err, out)
	require.Greater(t, retryID, id)
	retried := cliWait(t, env, retryID, orchestrator.RunSucceeded, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSucceeded, retried.Status, retried.Error)
	require.NotNil(t, retried.RetryOf)
	require.Equal(t, id, *retried.RetryOf)
	require.Equal(t, sha, retried.Revision)

	// Paging: one run per page points at the next.
	out = cliOK(t, env, "runs", "list", "--mapping", "cli-train", "--limit", "1")
	require.Contains(t, out, fmt.Sprintf("\nmore: orchestrator runs list --mapping cli-train --limit 1 --before %d\n", retryID))
	out = cliOK(t, env, "runs", "list", "--mapping", "cli-train", "--limit", "1", "--before", strconv.FormatInt(retryID, 10))
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+succeeded\s`, id), out)

	// A long run is stopped by cancel.
	cliOK(t, env, "mappings", "add", "cli-sleep", "--dataset", "acme/sleepy", "--", "sleep", "60")
	sleepID := cliDeliver(t, base, "acme/sleepy", strings.Repeat("b2", 20))
	cliWait(t, env, sleepID, orchestrator.RunRunning)
	out = cliOK(t, env, "runs", "cancel", strconv.FormatInt(sleepID, 10))
	// The worker may stop the command before the answer is written: then the run is already cancelled.
	require.Contains(t, []string{
		fmt.Sprintf("run %d: cancel requested, stopping its command\n", sleepID),
		fmt.Sprintf("run %d cancelled\n", sleepID),
	}, out)
	cancelled := cliWait(t, env, sleepID, orchestrator.RunCancelled, orchestrator.RunFailed, orchestrator.RunSucceeded)
	require.Equal(t, orchestrator.RunCancelled, cancelled.Status, cancelled.Error)

	// Disable keeps the mapping and its runs.
	out = cliOK(t, env, "mappings", "disable", "cli-sleep")
	require.Equal(t, "mapping cli-sleep disabled (its runs are kept)\n", out)
	out = cliOK(t, env, "mappings", "show", "cli-sleep")
	require.Contains(t, out, "enabled:      no\n")
	require.Contains(t, out, "\npaths:        every file\nignore_paths: none\n")
	require.Equal(t, orchestrator.RunCancelled, cliShow(t, env, sleepID).Status)

	// The answers the server refuses, each with its status and message.
	cases := []struct {
		name    string
		getenv  func(string) string
		args    []string
		wantErr string
	}{
		{"wrong token", cliGetenv(base, "wrong"), []string{"runs", "list"},
			"orchestrator: 401: this needs the admin token"},
		{"no token", cliGetenv(base, ""), []string{"mappings", "list"},
			"orchestrator: 401: this needs the admin token"},
		{"unknown run", env, []string{"runs", "show", "999999"}, "orchestrator: 404: run 999999 not found\n"},
		{"unknown mapping", env, []string{"mappings", "show", "nope"}, `orchestrator: 404: mapping "nope" not found`},
		{"mapping from file", env, []string{"mappings", "disable", "from-file"},
			`orchestrator: 409: mapping "from-file" is declared in the configuration file`},
		{"duplicate mapping", env, []string{"mappings", "add", "cli-train", "--dataset", "acme/cli", "--", "true"},
			"orchestrator: 409: "},
		{"bad ref", env, []string{"mappings", "add", "bad-ref", "--dataset", "acme/cli", "--ref", "main", "--", "true"},
			`orchestrator: 400: ref "main" must start with refs/`},
		{"bad path", env, []string{"mappings", "add", "bad-path", "--dataset", "acme/cli", "--path", "data/**", "--path", "data/[", "--", "true"},
			`orchestrator: 400: mapping "bad-path": paths[1] "data/[": syntax error in pattern`},
		{"bad timeout", env, []string{"mappings", "add", "bad-timeout", "--dataset", "acme/cli", "--timeout", "soon", "--", "true"},
			`orchestrator: 400: timeout "soon" is not a duration`},
		{"cancel of a finished run", env, []string{"runs", "cancel", strconv.FormatInt(id, 10)},
			fmt.Sprintf("orchestrator: 409: run %d is already succeeded", id)},
		{"bad status", env, []string{"runs", "list", "--status", "done"}, `orchestrator: 400: status "done" is not one of`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := cliRun(tc.getenv, tc.args...)
			require.Equal(t, 1, code, "stdout: %s, stderr: %s", stdout, stderr)
			require.Empty(t, stdout)
			require.Contains(t, stderr, tc.wantErr)
		})
	}

	t.Run("token flag", func(t *testing.T) {
		t.Parallel()
		// --token wins over the environment.
		out := cliOK(t, cliGetenv(base, "wrong"), "runs", "list", "--token", cliToken, "--mapping", "cli-sleep")
		require.Contains(t, out, strconv.FormatInt(sleepID, 10))
	})
	t.Run("server flag", func(t *testing.T) {
		t.Parallel()
		out := cliOK(t, cliGetenv("http://127.0.0.1:1", cliToken), "mappings", "list", "--server", base+"/", "--json")
		var list api.MappingList
		require.NoError(t, json.Unmarshal([]byte(out), &list))
		require.Len(t, list.Mappings, 3)
	})
}

// TestCLIArguments covers what the CLI refuses before it sends anything, and a server that is not there.
func TestCLIArguments(t *testing.T) {
	t.Parallel()
	closed := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	env := cliGetenv(closed, cliToken)
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"runs alone", []string{"runs"}, 2, "orchestrator runs list [--mapping M]"},
		{"runs help", []string{"runs", "-h"}, 2, "Every command also takes:"},
		{"mappings alone", []string{"mappings"}, 2, "'${DATASET_REVISION}'"},
		{"mappings help", []string{"mappings", "--help"}, 2, "orchestrator mappings disable NAME"},
		{"unknown runs command", []string{"runs", "delete", "1"}, 2, `unknown runs command "delete"`},
		{"unknown mappings command", []string{"mappings", "rm"}, 2, `unknown mappings command "rm"`},
		{"subcommand help", []string{"runs", "list", "-h"}, 2, "-before ID"},
		{"bad ID", []string{"runs", "show", "abc"}, 2, `run ID must be a positive whole number, not "abc"`},
		{"zero ID", []string{"runs", "retry", "0"}, 2, `run ID must be a positive whole number, not "0"`},
		{"negative ID", []string{"runs", "show", "-5"}, 2, `run ID must be a positive whole number, not "-5"`},
		{"empty mapping name", []string{"mappings", "disable", ""}, 2, "the mapping name must not be empty"},
		{"no ID", []string{"runs", "cancel"}, 2, "expected one run ID, got 0 arguments"},
		{"two IDs", []string{"runs", "show", "1", "2"}, 2, "expected one run ID, got 2 arguments"},
		{"list argument", []string{"runs", "list", "failed"}, 2, `unexpected argument "failed"`},
		{"unknown flag", []string{"runs", "list", "--colour"}, 2, "flag provided but not defined: -colour"},
		{"no mapping name", []string{"mappings", "show"}, 2, "expected one mapping name"},
		{"add without command", []string{"mappings", "add", "x", "--dataset", "a/b"}, 2, "give the command after --"},
		{"add with empty command", []string{"mappings", "add", "x", "--dataset", "a/b", "--"}, 2, "give the command after --"},
		{"add without dataset", []string{"mappings", "add", "x", "--", "true"}, 2, "--dataset is required"},
		{"add bad env", []string{"mappings", "add", "x", "--dataset", "a/b", "--env", "NOVALUE", "--", "true"}, 2,
			`"NOVALUE" is not KEY=VALUE`},
		{"add env twice", []string{"mappings", "add", "x", "--dataset", "a/b", "--env", "A=1", "--env", "A=2", "--", "true"}, 2,
			"A is given twice"},
		{"bad server", []string{"runs", "list", "--server", "127.0.0.1:8080"}, 1,
			`--server "127.0.0.1:8080" is not an http:// or https:// URL`},
		{"server not running", []string{"runs", "show", "1"}, 1,
			"orchestrator: cannot connect to " + closed + " (connection refused): is the server running? Point --server or ORCHESTRATOR_URL at it"},
		{"server not running, write", []string{"mappings", "add", "x", "--dataset", "a/b", "--", "true"}, 1,
			"cannot connect to " + closed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := cliRun(env, tc.args...)
			require.Equal(t, tc.wantCode, code, "stdout: %s, stderr: %s", stdout, stderr)
			require.Empty(t, stdout)
			require.Contains(t, stderr, tc.wantErr)
			require.NotContains(t, stderr, cliToken, "the token is never printed")
		})
	}
}

// TestCLIParse checks that flags may come before, between and after the positional arguments, and that "--"
// ends them even after a flag that takes a value.
func TestCLIParse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args           []string
		wantPositional []string
		wantAfterDash  []string
		wantDataset    string
		wantJSON       bool
	}{
		{[]string{"42", "--json"}, []string{"42"}, nil, "", true},
		{[]string{"--json", "42"}, []string{"42"}, nil, "", true},
		{[]string{"name", "--dataset", "a/b", "--", "sh", "-c", "x"}, []string{"name"}, []string{"sh", "-c", "x"}, "a/b", false},
		{[]string{"--dataset=a/b", "name", "--json", "--", "--json"}, []string{"name"}, []string{"--json"}, "a/b", true},
		{[]string{"--dataset", "--", "name", "--"}, []string{"name"}, []string{}, "--", false},
		{[]string{"-json", "-dataset", "x/y", "n"}, []string{"n"}, nil, "x/y", true},
	}
	for _, tc := range cases {
		c := newCommand("mappings add", "synopsis", func(string) string { return "" }, &bytes.Buffer{})
		dataset := c.fs.String("dataset", "", "")
		positional, afterDash, err := c.parse(tc.args)
		require.NoError(t, err, "%v", tc.args)
		require.Equal(t, tc.wantPositional, positional, "%v", tc.args)
		require.Equal(t, tc.wantAfterDash, afterDash, "%v", tc.args)
		require.Equal(t, tc.wantDataset, *dataset, "%v", tc.args)
		require.Equal(t, tc.wantJSON, c.jsonOut, "%v", tc.args)
	}
}

// TestCLIFormat checks the helpers that make the tables readable and printed commands pasteable.
func TestCLIFormat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"2h0m0s": "2h", "1h30m0s": "1h30m", "30s": "30s", "1m0s": "1m", "1h0m5s": "1h0m5s", "6h0m0s": "6h",
	} {
		require.Equal(t, want, shortDuration(in), in)
	}
	require.Equal(t, "run 7: 404: gone", fmt.Sprintf("run 7: %v", &api.Error{Status: http.StatusNotFound, Message: "gone"}))
	require.Equal(t, "Bad Gateway", errorMessage(http.StatusBadGateway, []byte("<html>proxy</html>")))
	require.Equal(t, "upstream down", errorMessage(http.StatusBadGateway, []byte("upstream down\n")))
	require.Equal(t, "nope", errorMessage(http.StatusBadRequest, []byte(`{"error":"nope"}`)))
}
