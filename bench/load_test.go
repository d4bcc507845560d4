package bench

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// TestWebhookBody: the deliveries the benchmark posts are the bytes of the Hub's payload type.
func TestWebhookBody(t *testing.T) {
	t.Parallel()
	shas := newShaGen()
	for _, oldSha := range []string{"", shas.next()} {
		sha := shas.next()
		want, err := json.Marshal(hub.DatasetUpdate("acme/bench", "66a1f0c2b9e4d3a1f2c3d4e5", hub.NewUpdatedRef("refs/heads/main", oldSha, sha)))
		require.NoError(t, err)
		require.Equal(t, string(want), string(webhookBody("acme/bench", oldSha, sha)), "old sha %q", oldSha)
	}
}
