package orchestrator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	tickets := Mapping{ID: 1, Name: "tickets", Dataset: "acme/support-tickets", Enabled: true}.WithDefaults()
	tagged := Mapping{ID: 2, Name: "tagged", Dataset: "acme/*", Refs: []string{"refs/tags/*"}, Enabled: true}.WithDefaults()
	disabled := Mapping{ID: 3, Name: "off", Dataset: "acme/support-tickets", Enabled: false}.WithDefaults()
	prs := Mapping{ID: 4, Name: "prs", Dataset: "acme/support-tickets", Refs: []string{"refs/pr/*"}, Enabled: true}.WithDefaults()

	type want struct {
		mapping, ref string
		decision     DecisionKind
		reason       string
	}
	cases := []struct {
		name     string
		fixture  string
		body     string
		mappings []Mapping
		want     []want
	}{
		{
			name: "MainPush", fixture: "dataset-main-push.json", mappings: []Mapping{tickets},
			want: []want{{"tickets", "refs/heads/main", DecisionQueued, ""}},
		},
		{
			name: "MultiRef", fixture: "dataset-multi-ref.json", mappings: []Mapping{tickets, tagged, disabled},
			want: []want{
				{"tickets", "refs/heads/main", DecisionQueued, ""},
				{"tickets", "refs/tags/v3", DecisionIgnored, "ref refs/tags/v3 is not watched (refs: refs/heads/main)"},
				{"tickets", "refs/heads/experiment", DecisionIgnored, "ref refs/heads/experiment is not watched (refs: refs/heads/main)"},
				{"tickets", "refs/pr/4", DecisionIgnored, "pull-request ref refs/pr/4"},
				{"tagged", "refs/heads/main", DecisionIgnored, "ref refs/heads/main is not watched (refs: refs/tags/*)"},
				{"tagged", "refs/tags/v3", DecisionQueued, ""},
				{"tagged", "refs/heads/experiment", DecisionIgnored, "ref refs/heads/experiment is not watched (refs: refs/tags/*)"},
				{"tagged", "refs/pr/4", DecisionIgnored, "pull-request ref refs/pr/4"},
			},
		},
		{
			name: "PullRequestRef", fixture: "dataset-pr-ref.json", mappings: []Mapping{tickets},
			want: []want{{"tickets", "refs/pr/4", DecisionIgnored, "pull-request ref refs/pr/4"}},
		},
		{
			name: "PullRequestRefWanted", fixture: "dataset-pr-ref.json", mappings: []Mapping{prs},
			want: []want{{"prs", "refs/pr/4", DecisionQueued, ""}},
		},
		{
			name: "ParquetBot", fixture: "dataset-parquet-bot.json", mappings: []Mapping{tickets},
			want: []want{{"tickets", "refs/convert/parquet", DecisionIgnored, "bot ref refs/convert/parquet"}},
		},
		{
			name: "NarrowedContentScope", fixture: "dataset-narrowed-content.json", mappings: []Mapping{tickets},
			want: []want{{"tickets", "refs/heads/main", DecisionQueued, ""}},
		},
		{
			name: "Model", fixture: "model-content-update.json", mappings: []Mapping{tickets},
			want: []want{{"", "", DecisionIgnored, "model repo, not a dataset"}},
		},
		{
			name: "Discussion", fixture: "discussion-pr-opened.json", mappings: []Mapping{tickets},
			want: []want{{"", "", DecisionIgnored, "event discussion.create is not a content update (only repo.content triggers runs)"}},
		},
		{
			name: "ConfigDois", fixture: "repo-config-dois.json", mappings: []Mapping{tickets},
			want: []want{{"", "", DecisionIgnored, "event repo.config.dois.update is not a content update (only repo.content triggers runs)"}},
		},
		{
			name: "NoMapping", fixture: "dataset-main-push.json", mappings: []Mapping{disabled},
			want: []want{{"", "", DecisionIgnored, "no enabled mapping for dataset acme/support-tickets"}},
		},
		{
			name:     "DeletedMain",
			body:     `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":"3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e","newSha":null}]}`,
			mappings: []Mapping{tickets},
			want:     []want{{"tickets", "refs/heads/main", DecisionIgnored, "ref deleted"}},
		},
		{
			name:     "NoRefs",
			body:     `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets"}}`,
			mappings: []Mapping{tickets},
			want:     []want{{"", "", DecisionIgnored, "no updatedRefs in the delivery"}},
		},
	}
	for _, sha := range []string{
		"3C8E0A1F5B7D9C2E4F6A8B0D1C3E5F7A9B2D4C6E",  // upper case
		"3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6",   // 39
		"3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e0", // 41
		"$(rm -rf /)",
	} {
		cases = append(cases, struct {
			name     string
			fixture  string
			body     string
			mappings []Mapping
			want     []want
		}{
			name:     "MalformedSha" + sha[:3],
			body:     `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets"},"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + sha + `"}]}`,
			mappings: []Mapping{tickets},
			want:     []want{{"tickets", "refs/heads/main", DecisionIgnored, "malformed newSha: not 40 lowercase hexadecimal characters"}},
		})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := []byte(tc.body)
			if tc.fixture != "" {
				body = readDelivery(t, tc.fixture)
			}
			d, err := ParseDelivery(body)
			require.NoError(t, err)
			decisions := Decide(d, tc.mappings)
			got := make([]want, len(decisions))
			for i, dec := range decisions {
				got[i] = want{dec.MappingName, dec.Ref, dec.Decision, dec.Reason}
				if dec.Decision == DecisionQueued {
					require.True(t, ValidSha(dec.NewSha), "a queued decision carries a valid sha")
				} else if dec.Reason == "malformed newSha: not 40 lowercase hexadecimal characters" {
					require.Empty(t, dec.NewSha, "a malformed sha is never passed on")
				}
			}
			require.Equal(t, tc.want, got)
			for _, dec := range decisions {
				if dec.Decision == DecisionIgnored {
					require.Contains(t, IgnoreCauses, dec.Cause, "an ignored decision names its cause")
				} else {
					require.Empty(t, dec.Cause)
				}
			}
			name := tc.name
			if strings.HasPrefix(name, "MalformedSha") {
				name = "MalformedSha"
			}
			if cause, ok := firstCause[name]; ok {
				require.Equal(t, cause, decisions[0].Cause)
			}
		})
	}
}

// firstCause is the cause of the first decision of the cases with these names (without the sha of MalformedSha).
var firstCause = map[string]IgnoreCause{
	"PullRequestRef": IgnorePullRequest, "ParquetBot": IgnoreBotRef, "Model": IgnoreNotDataset,
	"Discussion": IgnoreNotContent, "ConfigDois": IgnoreNotContent, "NoMapping": IgnoreNoMapping,
	"DeletedMain": IgnoreDeleted, "NoRefs": IgnoreNoRefs, "MalformedSha": IgnoreMalformed,
}
