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

	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
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

func FuzzParseAndDecide(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "deliveries", "*.json"))
	require.NoError(f, err)
	require.NotEmpty(f, files, "the sample deliveries are the fuzzer's seeds")
	for _, name := range files {
		data, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(data)
	}
	for _, s := range deliverytest.Edges() {
		f.Add(s)
	}
	mappings := fuzzMappings()

	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDelivery(data)
		if err != nil {
			checkParseError(t, err)
			return
		}
		checkDelivery(t, data, d)
		checkDecisions(t, d, mappings, Decide(d, mappings))
	})
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
