package orchestrator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// fuzzMappings is the fixed set of mappings every fuzzed delivery is decided against: an exact dataset name, a
// glob over an organisation, ref globs, a mapping that watches pull-request refs, and a disabled one that must
// never match.
func fuzzMappings() []Mapping {
	return []Mapping{
		Mapping{ID: 1, Name: "exact", Dataset: "acme/support-tickets", Enabled: true}.WithDefaults(),
		Mapping{ID: 2, Name: "org-glob", Dataset: "acme/*", Refs: []string{"refs/heads/*", "refs/tags/v*"}, Enabled: true}.WithDefaults(),
		Mapping{ID: 3, Name: "prs", Dataset: "acme/support-tickets", Refs: []string{"refs/pr/*"}, Enabled: true}.WithDefaults(),
		Mapping{ID: 4, Name: "any-org", Dataset: "*/*", Refs: []string{"refs/heads/release-[0-9]*", "refs/convert/parquet"}, Enabled: true}.WithDefaults(),
		Mapping{ID: 5, Name: "disabled", Dataset: "*", Refs: []string{"*"}, Enabled: false}.WithDefaults(),
	}
}

// fuzzSeeds are hand-made edge cases added to the sample deliveries.
var fuzzSeeds = []string{
	``,
	` `,
	"\t\r\n",
	`null`,
	`true`,
	`0`,
	`"x"`,
	`[]`,
	`[{}]`,
	`{}`,
	`{"event":null,"repo":null}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":null}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[null]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":""}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","newSha":null}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + strings.Repeat("A", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":"x","newSha":"` + strings.Repeat("a", 40) + `"},{"ref":"refs/heads/main","newSha":"` + strings.Repeat("a", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets","id":"1"},"updatedRefs":[{"ref":"refs/pr/1","newSha":"` + strings.Repeat("b", 40) + `"},{"ref":"refs/heads/release-1","newSha":"` + strings.Repeat("c", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\u0000"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/\u0000"}]}`,
	"{\"event\":{\"scope\":\"repo.content\",\"action\":\"update\"},\"repo\":{\"type\":\"dataset\",\"name\":\"acme/\xff\xfe\"}}",
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\n"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\u0085"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main\r\nX: 1"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"EVENT":{"scope":"repo"},"Repo":{"Name":"acme/y"}}`,
	`{"event":{"scope":"repo.content"},"event":{"action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":"repo.content.update","repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":1,"action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":{"ref":"refs/heads/main"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":["refs/heads/main"]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"webhook":{"id":7}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"[acme/x"}}`,
	`{"event":{"scope":"repo.content.","action":""},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"}} {}`,
	"\xef\xbb\xbf{}",
	`{"\u0065vent":{"scope":"repo.content","action":"update"},"REPO":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main"}],"updatedRefs":[{"newSha":"` + strings.Repeat("d", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"bucket","name":"acme/raw"},"updatedFiles":[{"path":"a\"]}","action":"add","size":1},{"path":"b","action":"delete"}],"updatedFilesTruncated":false}`,
}

func FuzzParseAndDecide(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "deliveries", "*.json"))
	require.NoError(f, err)
	require.NotEmpty(f, files, "the sample deliveries are the fuzzer's seeds")
	for _, name := range files {
		data, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(data)
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	mappings := fuzzMappings()

	f.Fuzz(func(t *testing.T, data []byte) {
		checkWalk(t, data)
		checkMemberwiseDecoding(t, data)
		d, err := ParseDelivery(data)
		if err != nil {
			checkParseError(t, err)
			return
		}
		checkDelivery(t, data, d)
		checkDecisions(t, d, mappings, Decide(d, mappings))
	})
}

// checkMemberwiseDecoding: decoding only the members wirePayload reads gives what decoding the whole body into
// it gives, and fails on the same field.
func checkMemberwiseDecoding(t *testing.T, data []byte) {
	t.Helper()
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !utf8.Valid(trimmed) || !json.Valid(trimmed) || trimmed[0] != '{' {
		return
	}
	var whole wirePayload
	wholeErr := json.Unmarshal(trimmed, &whole)
	got, err := decodeWire(trimmed)
	if wholeErr != nil {
		require.Error(t, err, "the whole body fails with %v", wholeErr)
		require.Equal(t, wireError("", wholeErr).Error(), err.Error())
		return
	}
	require.NoError(t, err)
	require.Equal(t, whole, got)
}

// checkParseError: a rejected body is always the caller's fault, said in words.
func checkParseError(t *testing.T, err error) {
	t.Helper()
	var appErr *Error
	require.True(t, errors.As(err, &appErr), "error %v (%T) is not an *Error", err, err)
	require.Equal(t, CodeInvalid, ErrorCode(err), "error %v", err)
	require.NotEmpty(t, appErr.Message)
	require.NotEmpty(t, ErrorMessage(err))
}

// checkDelivery: an accepted body is one JSON object with every required field, and nothing PostgreSQL's text
// type cannot hold.
func checkDelivery(t *testing.T, data []byte, d *Delivery) {
	t.Helper()
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	require.True(t, json.Valid(trimmed), "accepted a body that is not JSON: %q", data)
	require.Equal(t, byte('{'), trimmed[0], "accepted a body that is not an object: %q", data)
	if d.ShortenedFrom == 0 {
		require.Equal(t, data, d.Raw, "the raw body is kept as received")
	} else {
		require.False(t, d.MayTrigger(), "a delivery that may trigger is kept whole")
		require.Equal(t, int64(len(data)), d.ShortenedFrom)
		require.Greater(t, len(data), PayloadWholeMax, "a body of up to PayloadWholeMax bytes is kept whole")
		require.LessOrEqual(t, len(d.Raw), PayloadWholeMax)
		require.True(t, json.Valid(d.Raw), "a shortened payload is JSON: %q", d.Raw)
	}

	require.Equal(t, d.Scope+"."+d.Action, d.Event())
	for name, v := range map[string]string{"scope": d.Scope, "action": d.Action, "repo.type": d.RepoType, "repo.name": d.RepoName} {
		require.NotEmpty(t, v, "required field %s is empty", name)
	}
	strs := map[string]string{
		"scope": d.Scope, "action": d.Action, "repo.type": d.RepoType, "repo.name": d.RepoName,
		"repo.id": d.RepoID, "repo.headSha": d.HeadSha, "webhook.id": d.WebhookID,
	}
	for i, r := range d.Refs {
		require.NotEmpty(t, r.Ref, "updatedRefs[%d].ref is empty", i)
		strs[fmt.Sprintf("updatedRefs[%d].ref", i)] = r.Ref
		strs[fmt.Sprintf("updatedRefs[%d].oldSha", i)] = r.OldSha
		strs[fmt.Sprintf("updatedRefs[%d].newSha", i)] = r.NewSha
	}
	for name, v := range strs {
		require.NotContains(t, v, "\x00", "%s contains a NUL", name)
	}
	// JSON is UTF-8: an invalid byte would be replaced silently, so the stored name or ref would differ from the
	// one sent. Names and refs never hold control characters on the Hub.
	require.True(t, utf8.Valid(data), "accepted a body that is not UTF-8: %q", data)
	for name, v := range strs {
		if name == "repo.name" || strings.HasSuffix(name, "].ref") {
			require.Equal(t, -1, strings.IndexFunc(v, unicode.IsControl), "%s %q contains a control character", name, v)
		}
	}

	again, err := ParseDelivery(data)
	require.NoError(t, err, "parsing is deterministic")
	require.Equal(t, d, again)
}

// checkDecisions: one decision for the whole delivery, or exactly one per (matched mapping, ref) in that order;
// only well-formed revisions of watched refs are queued.
func checkDecisions(t *testing.T, d *Delivery, mappings []Mapping, decisions []Decision) {
	t.Helper()
	var matched []Mapping
	for _, m := range mappings {
		if m.Enabled && m.MatchesDataset(d.RepoName) {
			matched = append(matched, m)
		}
	}
	deliveryLevel := !d.IsContentUpdate() || d.RepoType != "dataset" || len(d.Refs) == 0 || len(matched) == 0
	if deliveryLevel {
		require.Len(t, decisions, 1, "a delivery-level decision is one decision")
		dec := decisions[0]
		require.Equal(t, DecisionIgnored, dec.Decision)
		require.NotEmpty(t, dec.Reason)
		require.Zero(t, dec.MappingID)
		require.Empty(t, dec.MappingName)
		require.Empty(t, dec.Ref)
		return
	}

	require.Len(t, decisions, len(matched)*len(d.Refs), "one decision per (mapping, ref)")
	for i, dec := range decisions {
		m, r := matched[i/len(d.Refs)], d.Refs[i%len(d.Refs)]
		require.Equal(t, m.ID, dec.MappingID, "decision %d", i)
		require.Equal(t, m.Name, dec.MappingName, "decision %d", i)
		require.Equal(t, r.Ref, dec.Ref, "decision %d", i)
		require.Equal(t, m.MaxAttempts, dec.mapping.MaxAttempts, "decision %d", i)
		require.True(t, dec.OldSha == "" || ValidSha(dec.OldSha), "decision %d: oldSha %q reaches a run", i, dec.OldSha)
		switch dec.Decision {
		case DecisionQueued:
			require.True(t, ValidSha(dec.NewSha), "decision %d: queued a malformed revision %q", i, dec.NewSha)
			require.Equal(t, r.NewSha, dec.NewSha)
			require.True(t, m.WatchesRef(r.Ref), "decision %d: queued an unwatched ref %q", i, r.Ref)
			require.Empty(t, dec.Reason)
			require.NotZero(t, dec.MappingID)
			require.NotEmpty(t, dec.MappingName)
		case DecisionIgnored:
			require.NotEmpty(t, dec.Reason, "decision %d: ignored without a reason", i)
			require.False(t, m.WatchesRef(r.Ref) && ValidSha(r.NewSha), "decision %d: ignored a watched ref with a valid revision", i)
		default:
			t.Fatalf("decision %d: Decide returned %q, which only the store may decide", i, dec.Decision)
		}
		require.Zero(t, dec.RunID)
	}
}
