package orchestrator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
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

	// Every error of hub.ParsePayload is an *Error with CodeInvalid and the same message.
	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		for _, body := range deliverytest.Edges() {
			_, hubErr := hub.ParsePayload(body)
			_, err := ParseDelivery(body)
			if hubErr == nil {
				require.NoError(t, err, "%q", body)
				continue
			}
			require.Error(t, err, "%q", body)
			require.Equal(t, CodeInvalid, ErrorCode(err))
			require.Equal(t, hubErr.Error(), ErrorMessage(err))
			require.Equal(t, hubErr.Error(), err.Error())
		}
	})
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
