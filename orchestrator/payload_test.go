package orchestrator

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// TestPayloadShortened: the body of a delivery that cannot trigger is stored shortened once it is larger than
// PayloadWholeMax; every other body is stored as received. hub's tests say what a shortened payload keeps.
func TestPayloadShortened(t *testing.T) {
	t.Parallel()
	model := func(extra string) []byte {
		return []byte(`{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"model","name":"acme/m","headSha":"` +
			strings.Repeat("a", 40) + `"}` + extra + `}`)
	}
	dataset := func(extra string) []byte {
		return []byte(`{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"dataset","name":"acme/d"},` +
			`"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + strings.Repeat("b", 40) + `"}]` + extra + `}`)
	}
	cases := []struct {
		name      string
		body      []byte
		shortened bool
	}{
		{name: "SmallBucketWhole", body: deliverytest.Bucket(4)},
		{name: "BucketAtTheLimitWhole", body: deliverytest.BucketOfSize(PayloadWholeMax)},
		{name: "BucketJustOverTheLimit", body: deliverytest.BucketOfSize(PayloadWholeMax + 1), shortened: true},
		{name: "Bucket10000Files", body: deliverytest.Bucket(10000), shortened: true},
		{name: "ModelPaddedString", body: model(`,"pad":"` + strings.Repeat("p", 100<<10) + `"`), shortened: true},
		{name: "LeadingSpace", body: append([]byte(" \n"), model(`,"pad":"`+strings.Repeat("p", 100<<10)+`"`)...), shortened: true},
		{name: "DiscussionWhole", body: []byte(`{"event":{"action":"create","scope":"discussion"},"repo":{"type":"dataset","name":"acme/d"},` +
			`"discussion":{"title":"` + strings.Repeat("t", 60<<10) + `"}}`)},
		{name: "DatasetContentWhole", body: dataset(`,"pad":"` + strings.Repeat("p", 1<<20) + `"`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := ParseDelivery(tc.body)
			require.NoError(t, err)
			if !tc.shortened {
				require.Zero(t, d.ShortenedFrom)
				require.Equal(t, tc.body, d.Raw, "kept as received")
				return
			}
			require.False(t, d.MayTrigger())
			require.Equal(t, int64(len(tc.body)), d.ShortenedFrom)
			require.LessOrEqual(t, len(d.Raw), PayloadWholeMax)
			require.Equal(t, hub.ShortenPayload(bytes.TrimLeft(tc.body, " \t\r\n"), PayloadWholeMax), d.Raw)

			again, err := ParseDelivery(tc.body)
			require.NoError(t, err)
			require.Equal(t, d, again, "shortening is deterministic")
		})
	}
}

// TestMayTriggerAgreesWithDecide: the deliveries that MayTrigger says cannot trigger are those Decide ignores
// for their kind, even when every dataset is mapped.
func TestMayTriggerAgreesWithDecide(t *testing.T) {
	t.Parallel()
	all := []Mapping{Mapping{ID: 1, Name: "all", Dataset: "*/*", Refs: []string{"*"}, Enabled: true}.WithDefaults()}
	bodies := [][]byte{deliverytest.Bucket(3), []byte(seedBody)}
	for _, name := range []string{"dataset-main-push.json", "dataset-multi-ref.json", "dataset-narrowed-content.json",
		"discussion-pr-opened.json", "model-content-update.json", "repo-config-dois.json"} {
		bodies = append(bodies, readDelivery(t, name))
	}
	for _, body := range bodies {
		d, err := ParseDelivery(body)
		require.NoError(t, err)
		decisions := Decide(d, all)
		kind := len(decisions) == 1 && (decisions[0].Cause == IgnoreNotContent || decisions[0].Cause == IgnoreNotDataset)
		require.Equal(t, !d.MayTrigger(), kind, "%s %s: %+v", d.RepoType, d.Event(), decisions)
	}
}

const seedBody = `{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"space","name":"acme/s"}}`
