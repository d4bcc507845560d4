package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
)

// samples are the sample deliveries of testdata/deliveries, by file name.
func samples(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "deliveries", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string][]byte{}
	for _, name := range files {
		data, err := os.ReadFile(name)
		require.NoError(t, err)
		out[filepath.Base(name)] = data
	}
	return out
}

func TestParsePayload(t *testing.T) {
	t.Parallel()

	t.Run("DatasetPush", func(t *testing.T) {
		t.Parallel()
		p, err := ParsePayload(samples(t)["dataset-multi-ref.json"])
		require.NoError(t, err)
		require.Equal(t, ScopeRepoContent, *p.Event.Scope)
		require.Equal(t, ActionUpdate, *p.Event.Action)
		require.Equal(t, RepoTypeDataset, *p.Repo.Type)
		require.Equal(t, "acme/support-tickets", *p.Repo.Name)
		require.Equal(t, "66a1f0c2b9e4d3a1f2c3d4e5", Value(p.Repo.ID))
		require.Equal(t, "6650e8d1c2b3a4f5e6d7c8b9", Value(p.Webhook.ID))
		require.Len(t, p.UpdatedRefs, 4)
		require.Equal(t, "refs/tags/v3", *p.UpdatedRefs[1].Ref)
		require.Nil(t, p.UpdatedRefs[1].OldSha, "a created ref has no oldSha")
		require.Nil(t, p.UpdatedRefs[2].NewSha, "a deleted ref has no newSha")
	})

	t.Run("EverySampleParses", func(t *testing.T) {
		t.Parallel()
		for name, data := range samples(t) {
			_, err := ParsePayload(data)
			require.NoError(t, err, name)
		}
	})

	cases := []struct {
		name    string
		body    string
		wantErr string
	}{
		{"Empty", ``, "invalid JSON: empty body"},
		{"NotJSON", `not-json{`, "invalid JSON"},
		{"Truncated", `{"event":{"scope":"repo"`, "invalid JSON"},
		{"Array", `[1,2]`, "must be a JSON object"},
		{"Null", `null`, "must be a JSON object"},
		{"String", `"hello"`, "must be a JSON object"},
		{"Number", `42`, "must be a JSON object"},
		{"SeedInvalidPayload", `{"repo":{"type":"model","name":"x/y"}}`, "missing event.scope, event.action"},
		{"MissingRepo", `{"event":{"scope":"repo","action":"update"}}`, "missing repo.type, repo.name"},
		{"EmptyScope", `{"event":{"scope":"","action":"update"},"repo":{"type":"model","name":"x/y"}}`, "missing event.scope"},
		{"EventString", `{"event":"repo.update","repo":{"type":"model","name":"x/y"}}`, `field "event" must be an object, not string`},
		{"ScopeNumber", `{"event":{"scope":1,"action":"update"},"repo":{"type":"model","name":"x/y"}}`, `field "event.scope" must be a string, not number`},
		{"RefsObject", `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"x/y"},"updatedRefs":{"ref":"x"}}`, `field "updatedRefs" must be an array, not object`},
		{"NewShaNumber", `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"x/y"},"updatedRefs":[{"ref":"refs/heads/main","newSha":12}]}`, `must be a string, not number`},
		{"RefMissing", `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"x/y"},"updatedRefs":[{"newSha":"a"}]}`, "updatedRefs[0].ref is missing"},
		{"RefNull", `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"x/y"},"updatedRefs":[null]}`, "updatedRefs[0].ref is missing"},
		{"NULInName", `{"event":{"scope":"repo","action":"update"},"repo":{"type":"model","name":"x/\u0000y"}}`, "repo.name contains a NUL character"},
		{"DeeplyNested", `{"event":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`, "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePayload([]byte(tc.body))
			require.Error(t, err)
			_, ok := errors.AsType[*PayloadError](err)
			require.True(t, ok, "%v (%T) is not a *PayloadError", err, err)
			require.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// TestDatasetUpdate: the body built for a dataset's new commits is the Hub's shape, member for member, and
// parses back to what it was built from.
func TestDatasetUpdate(t *testing.T) {
	t.Parallel()
	sha := strings.Repeat("a", 40)
	cases := []struct {
		name string
		p    Payload
		want string
	}{
		{"CreatedRef", DatasetUpdate("acme/d", "66a1f0c2b9e4d3a1f2c3d4e5", NewUpdatedRef("refs/heads/main", "", sha)),
			`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/d","id":"66a1f0c2b9e4d3a1f2c3d4e5"},` +
				`"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,"newSha":"` + sha + `"}]}`},
		{"MovedAndDeleted", DatasetUpdate("acme/d", "", NewUpdatedRef("refs/heads/main", sha, sha), NewUpdatedRef("refs/heads/x", sha, "")),
			`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/d"},` +
				`"updatedRefs":[{"ref":"refs/heads/main","oldSha":"` + sha + `","newSha":"` + sha + `"},{"ref":"refs/heads/x","oldSha":"` + sha + `","newSha":null}]}`},
		{"NoRefs", DatasetUpdate("acme/d", "1"),
			`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/d","id":"1"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw, err := json.Marshal(tc.p)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(raw))
			back, err := ParsePayload(raw)
			require.NoError(t, err)
			require.Equal(t, tc.p, *back)
		})
	}
}

func FuzzParsePayload(f *testing.F) {
	for _, data := range samples(f) {
		f.Add(data)
	}
	for _, s := range deliverytest.Edges() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkWalk(t, data)
		checkMemberwiseDecoding(t, data)
		p, err := ParsePayload(data)
		if err != nil {
			_, ok := errors.AsType[*PayloadError](err)
			require.True(t, ok, "error %v (%T) is not a *PayloadError", err, err)
			require.NotEmpty(t, err.Error())
			return
		}
		require.True(t, utf8.Valid(data), "accepted a body that is not UTF-8: %q", data)
		require.NotNil(t, p.Event.Scope)
		require.NotNil(t, p.Event.Action)
		require.NotNil(t, p.Repo.Type)
		require.NotNil(t, p.Repo.Name)
		for i, r := range p.UpdatedRefs {
			require.NotEmpty(t, Value(r.Ref), "updatedRefs[%d].ref", i)
		}
	})
}

// checkMemberwiseDecoding: decoding only the members Payload reads gives what decoding the whole body into it
// gives, and fails on the same field.
func checkMemberwiseDecoding(t *testing.T, data []byte) {
	t.Helper()
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !utf8.Valid(trimmed) || !json.Valid(trimmed) || trimmed[0] != '{' {
		return
	}
	var whole Payload
	wholeErr := json.Unmarshal(trimmed, &whole)
	got, err := decodePayload(trimmed)
	if wholeErr != nil {
		require.Error(t, err, "the whole body fails with %v", wholeErr)
		require.Equal(t, decodeError("", wholeErr).Error(), err.Error())
		return
	}
	require.NoError(t, err)
	require.Equal(t, whole, got)
}
