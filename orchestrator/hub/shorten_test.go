package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
)

// summary is the replacement of a value too large to keep.
type summary struct {
	Omitted string            `json:"omitted"`
	Entries *int              `json:"entries"`
	Members *int              `json:"members"`
	Bytes   int               `json:"bytes"`
	First   []json.RawMessage `json:"first"`
}

// members decodes a stored payload's top-level members.
func members(t *testing.T, payload []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(payload, &m), "the payload is a JSON object: %.300s", payload)
	return m
}

// shortLimit is the limit the orchestrator shortens payloads to.
const shortLimit = 64 << 10

func TestShortenPayload(t *testing.T) {
	t.Parallel()
	ptr := func(n int) *int { return &n }
	model := func(extra string) []byte {
		return []byte(`{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"model","name":"acme/m","headSha":"` +
			strings.Repeat("a", 40) + `"}` + extra + `}`)
	}
	dataset := func(extra string) []byte {
		return []byte(`{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"dataset","name":"acme/d"},` +
			`"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + strings.Repeat("b", 40) + `"}]` + extra + `}`)
	}
	var manyMembers strings.Builder
	for i := range 100 {
		fmt.Fprintf(&manyMembers, `,"m%03d":"%s"`, i, strings.Repeat("x", 3000))
	}
	bigObject := `,"big":{` + strings.Repeat(`"k":1,`, 15000) + `"last":[1,2]}`

	cases := []struct {
		name string
		body []byte
		// kept lists the members kept as received and summaries those replaced.
		kept      []string
		summaries map[string]summary
		omitted   string // the omitted-members count, raw JSON, when some are
	}{
		{name: "BucketJustOverTheLimit", body: deliverytest.BucketOfSize(shortLimit + 1),
			kept:      []string{"event", "repo", "updatedFilesTruncated", "webhook"},
			summaries: map[string]summary{"updatedFiles": {Omitted: "array"}}},
		{name: "Bucket10000Files", body: deliverytest.Bucket(10000),
			kept:      []string{"event", "repo", "updatedFilesTruncated", "webhook"},
			summaries: map[string]summary{"updatedFiles": {Omitted: "array", Entries: ptr(10000)}}},
		{name: "ModelPaddedString", body: model(`,"pad":"` + strings.Repeat("p", 100<<10) + `"`),
			kept: []string{"event", "repo"}, summaries: map[string]summary{"pad": {Omitted: "string", Bytes: 100<<10 + 2}}},
		{name: "ModelLargeNumber", body: model(`,"n":` + strings.Repeat("7", 70<<10)),
			kept: []string{"event", "repo"}, summaries: map[string]summary{"n": {Omitted: "number", Bytes: 70 << 10}}},
		{name: "ModelLargeObject", body: model(bigObject + `,"after":true`),
			kept: []string{"event", "repo", "after"}, summaries: map[string]summary{"big": {Omitted: "object", Members: ptr(15001)}}},
		// Members of 3 KiB are kept as received while they fit (21 of them); the 79 others are counted.
		{name: "ModelManyMembers", body: model(manyMembers.String()),
			kept: []string{"event", "repo", "m000", "m020"}, omitted: `{"members":79,"bytes":` + fmt.Sprint(79*(6+3002)) + `}`},
		{name: "ModelHugeKey", body: model(`,"` + strings.Repeat("k", 80<<10) + `":1,"after":2`),
			kept: []string{"event", "repo"}, omitted: `{"members":2,"bytes":` + fmt.Sprint(80<<10+2+1+len(`"after"`)+1) + `}`},
		{name: "DatasetContent", body: dataset(`,"pad":"` + strings.Repeat("p", 1<<20) + `"`),
			kept: []string{"event", "repo", "updatedRefs"}, summaries: map[string]summary{"pad": {Omitted: "string", Bytes: 1<<20 + 2}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			short := ShortenPayload(tc.body, shortLimit)
			require.LessOrEqual(t, len(short), shortLimit)
			got, whole := members(t, short), members(t, tc.body)
			for _, k := range tc.kept {
				require.True(t, bytes.Equal(whole[k], got[k]), "%s is kept as received: %.100s", k, got[k])
			}
			for k, want := range tc.summaries {
				var s summary
				require.NoError(t, json.Unmarshal(got[k], &s), "%s: %.300s", k, got[k])
				require.Equal(t, want.Omitted, s.Omitted, k)
				require.Equal(t, len(whole[k]), s.Bytes, "%s: the size received", k)
				require.Equal(t, want.Members, s.Members, k)
				if s.Omitted != "array" {
					require.Nil(t, s.Entries, k)
					require.Nil(t, s.First, k)
					continue
				}
				var entries []json.RawMessage
				require.NoError(t, json.Unmarshal(whole[k], &entries))
				require.NotNil(t, s.Entries, k)
				require.Equal(t, len(entries), *s.Entries, "%s: its number of entries", k)
				if want.Entries != nil {
					require.Equal(t, *want.Entries, *s.Entries, k)
				}
				require.NotEmpty(t, s.First, "%s keeps its first entries", k)
				require.Equal(t, entries[:len(s.First)], s.First, "%s keeps its first entries as received", k)
				require.LessOrEqual(t, len(got[k]), shortHeadMax+100)
			}
			if tc.omitted != "" {
				require.JSONEq(t, tc.omitted, string(got[PayloadOmittedKey]))
			} else {
				require.Nil(t, got[PayloadOmittedKey])
			}
			for k := range got {
				_, summarised := tc.summaries[k]
				require.True(t, summarised || k == PayloadOmittedKey || bytes.Equal(got[k], whole[k]), "%s", k)
			}

			require.Equal(t, short, ShortenPayload(tc.body, shortLimit), "shortening is deterministic")
		})
	}
}
