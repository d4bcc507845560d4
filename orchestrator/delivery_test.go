package orchestrator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
)

func readDelivery(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "deliveries", name))
	require.NoError(t, err)
	return data
}

func TestParseDelivery(t *testing.T) {
	t.Parallel()

	t.Run("DatasetPush", func(t *testing.T) {
		t.Parallel()
		d, err := ParseDelivery(readDelivery(t, "dataset-multi-ref.json"))
		require.NoError(t, err)
		require.Equal(t, "repo.content.update", d.Event())
		require.True(t, d.IsContentUpdate())
		require.Equal(t, "dataset", d.RepoType)
		require.Equal(t, "acme/support-tickets", d.RepoName)
		require.Equal(t, "66a1f0c2b9e4d3a1f2c3d4e5", d.RepoID)
		require.Equal(t, "6650e8d1c2b3a4f5e6d7c8b9", d.WebhookID)
		require.Equal(t, []RefUpdate{
			{Ref: "refs/heads/main", OldSha: "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f", NewSha: "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"},
			{Ref: "refs/tags/v3", NewSha: "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"},
			{Ref: "refs/heads/experiment", OldSha: "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"},
			{Ref: "refs/pr/4", NewSha: "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"},
		}, d.Refs)
	})

	t.Run("EveryFixtureParses", func(t *testing.T) {
		t.Parallel()
		entries, err := os.ReadDir(filepath.Join("..", "testdata", "deliveries"))
		require.NoError(t, err)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".json") {
				_, err := ParseDelivery(readDelivery(t, e.Name()))
				require.NoError(t, err, e.Name())
			}
		}
	})

	t.Run("NarrowedScopes", func(t *testing.T) {
		t.Parallel()
		d, err := ParseDelivery([]byte(`{"event":{"scope":"repo.content.lfs","action":"update"},"repo":{"type":"dataset","name":"a/b"}}`))
		require.NoError(t, err)
		require.True(t, d.IsContentUpdate())
		d, err = ParseDelivery([]byte(`{"event":{"scope":"repo.contentious","action":"update"},"repo":{"type":"dataset","name":"a/b"}}`))
		require.NoError(t, err)
		require.False(t, d.IsContentUpdate())
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
			_, err := ParseDelivery([]byte(tc.body))
			require.Error(t, err)
			require.Equal(t, CodeInvalid, ErrorCode(err))
			require.Contains(t, ErrorMessage(err), tc.wantErr)
		})
	}
}

// BenchmarkParseDelivery parses bucket deliveries of the Hub's largest file list and of the body limit:
// B/op and allocs/op say what parsing holds beside the body itself.
func BenchmarkParseDelivery(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"Bucket10000Files", deliverytest.Bucket(10000)},
		{"Bucket16MiB", deliverytest.BucketOfSize(16 << 20)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseDelivery(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
