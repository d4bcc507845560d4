package orchestrator

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// DecisionKind is what was decided for a (mapping, ref) of a delivery.
type DecisionKind string

// Decision kinds.
const (
	DecisionQueued    DecisionKind = "queued"    // a new run was created and enqueued
	DecisionDuplicate DecisionKind = "duplicate" // the same (mapping, repo, ref, revision) already has a run
	DecisionIgnored   DecisionKind = "ignored"   // nothing to do, for the reason given
	DecisionBaseline  DecisionKind = "baseline"  // catch-up saw a ref for the first time: recorded, not run
)

// DecisionKinds lists every decision kind.
var DecisionKinds = []DecisionKind{DecisionQueued, DecisionDuplicate, DecisionIgnored, DecisionBaseline}

// Decision is the outcome for one mapping and one ref of a delivery. A decision that concerns the whole delivery
// (a scope or repo type that never triggers, a dataset no mapping wants) has no mapping and no ref.
type Decision struct {
	MappingID   int64        `json:"-"`
	MappingName string       `json:"mapping,omitempty"`
	Ref         string       `json:"ref,omitempty"`
	OldSha      string       `json:"-"`
	NewSha      string       `json:"revision,omitempty"`
	Decision    DecisionKind `json:"decision"`
	Reason      string       `json:"reason,omitempty"`
	RunID       int64        `json:"run_id,omitempty"`
	// RunStatus and SupersededBy tell, in listings, what became of the decision's run since.
	RunStatus    RunStatus `json:"run_status,omitempty"`
	SupersededBy int64     `json:"superseded_by,omitempty"`

	// Cause says why a decision is ignored, in one of a few words, for metrics; the reason says it in full.
	Cause IgnoreCause `json:"-"`

	mapping *Mapping
}

// IgnoreCause says in a few words why a decision is ignored: a bounded set, fit for a metric label.
type IgnoreCause string

// Causes of ignored decisions.
const (
	IgnoreNotContent  IgnoreCause = "not_content_update"
	IgnoreNotDataset  IgnoreCause = "not_dataset"
	IgnoreNoRefs      IgnoreCause = "no_refs"
	IgnoreNoMapping   IgnoreCause = "no_mapping"
	IgnorePullRequest IgnoreCause = "pull_request_ref"
	IgnoreBotRef      IgnoreCause = "bot_ref"
	IgnoreUnwatched   IgnoreCause = "ref_not_watched"
	IgnoreDeleted     IgnoreCause = "ref_deleted"
	IgnoreMalformed   IgnoreCause = "malformed_sha"
	// IgnoreOlder is a revision older than one already recorded for its ref, for a mapping that trains only
	// the newest.
	IgnoreOlder IgnoreCause = "older_revision"
)

// IgnoreCauses lists every cause of an ignored decision.
var IgnoreCauses = []IgnoreCause{IgnoreNotContent, IgnoreNotDataset, IgnoreNoRefs, IgnoreNoMapping, IgnorePullRequest,
	IgnoreBotRef, IgnoreUnwatched, IgnoreDeleted, IgnoreMalformed, IgnoreOlder}

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// ValidSha reports whether s is a full commit id: 40 lowercase hexadecimal characters.
func ValidSha(s string) bool { return shaRE.MatchString(s) }

// Decide returns the decisions for a delivery against the enabled mappings: DecisionQueued for every (mapping,
// ref) that should train, DecisionIgnored with a reason for everything else. It does not know about earlier
// runs; the store turns a queued decision into a duplicate when the run already exists. Decide is pure.
func Decide(d *Delivery, mappings []Mapping) []Decision {
	ignore := func(cause IgnoreCause, format string, args ...any) []Decision {
		return []Decision{{Decision: DecisionIgnored, Cause: cause, Reason: fmt.Sprintf(format, args...)}}
	}
	if !d.IsContentUpdate() {
		return ignore(IgnoreNotContent, "event %s is not a content update (only repo.content triggers runs)", d.Event())
	}
	if d.RepoType != hub.RepoTypeDataset {
		return ignore(IgnoreNotDataset, "%s repo, not a dataset", d.RepoType)
	}
	if len(d.Refs) == 0 {
		return ignore(IgnoreNoRefs, "no updatedRefs in the delivery")
	}

	var matched []*Mapping
	for i := range mappings {
		if mappings[i].Enabled && mappings[i].MatchesDataset(d.RepoName) {
			matched = append(matched, &mappings[i])
		}
	}
	if len(matched) == 0 {
		return ignore(IgnoreNoMapping, "no enabled mapping for dataset %s", d.RepoName)
	}

	decisions := make([]Decision, 0, len(matched)*len(d.Refs))
	for _, m := range matched {
		for _, r := range d.Refs {
			dec := Decision{
				MappingID: m.ID, MappingName: m.Name, Ref: r.Ref, OldSha: r.OldSha, NewSha: r.NewSha,
				Decision: DecisionIgnored, mapping: m,
			}
			switch {
			case !m.WatchesRef(r.Ref):
				dec.Cause, dec.Reason = unwatchedReason(m, r.Ref)
			case r.NewSha == "":
				dec.Cause, dec.Reason = IgnoreDeleted, "ref deleted"
			case !ValidSha(r.NewSha):
				dec.Cause, dec.Reason = IgnoreMalformed, "malformed newSha: not 40 lowercase hexadecimal characters"
				dec.NewSha = ""
			default:
				dec.Decision = DecisionQueued
			}
			if !ValidSha(dec.OldSha) {
				dec.OldSha = ""
			}
			decisions = append(decisions, dec)
		}
	}
	return decisions
}

// unwatchedReason returns the cause and the reason of a ref the mapping does not watch.
func unwatchedReason(m *Mapping, ref string) (IgnoreCause, string) {
	switch {
	case strings.HasPrefix(ref, "refs/pr/"):
		return IgnorePullRequest, "pull-request ref " + ref
	case strings.HasPrefix(ref, "refs/convert/"):
		return IgnoreBotRef, "bot ref " + ref
	}
	return IgnoreUnwatched, fmt.Sprintf("ref %s is not watched (refs: %s)", ref, strings.Join(m.Refs, ", "))
}
