package api

import (
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Mapping is a mapping as the API shows it: every setting as it applies, defaults included, durations in Go's
// syntax ("2h0m0s"), and the notify targets' URLs shortened to scheme://host/…. The fields are in the order in
// which the API has always written them.
type Mapping struct {
	ID             int64                          `json:"id"`
	Name           string                         `json:"name"`
	Dataset        string                         `json:"dataset"`
	Refs           []string                       `json:"refs"`
	Command        []string                       `json:"command"`
	Workdir        string                         `json:"workdir,omitempty"`
	Env            map[string]string              `json:"env,omitempty"`
	MaxAttempts    int                            `json:"max_attempts"`
	Concurrency    int                            `json:"concurrency"`
	OnNewRevision  orchestrator.NewRevisionPolicy `json:"on_new_revision"`
	RunOnBaseline  bool                           `json:"run_on_baseline"`
	VerifyRevision bool                           `json:"verify_revision"`
	Queue          string                         `json:"queue"`
	Source         orchestrator.MappingSource     `json:"source"`
	Enabled        bool                           `json:"enabled"`
	CreatedAt      time.Time                      `json:"created_at"`
	UpdatedAt      time.Time                      `json:"updated_at"`
	Timeout        orchestrator.Duration          `json:"timeout"`
	QuietPeriod    orchestrator.Duration          `json:"quiet_period"`
	MaxWait        orchestrator.Duration          `json:"max_wait"`
	Notify         []orchestrator.NotifyTarget    `json:"notify"`
	Paths          []string                       `json:"paths"`
	IgnorePaths    []string                       `json:"ignore_paths"`
	// Executor is where the commands run; HFJobs the settings of hf-jobs (its secrets by name only).
	Executor orchestrator.ExecutorKind    `json:"executor"`
	HFJobs   *orchestrator.HFJobsSettings `json:"hf_jobs,omitempty"`
}

// NewMapping returns m as the API shows it; no paths or ignore_paths are empty lists, not null.
func NewMapping(m *orchestrator.Mapping) Mapping {
	notify := make([]orchestrator.NotifyTarget, len(m.Notify))
	for i, t := range m.Notify {
		notify[i] = t.Redacted()
	}
	return Mapping{
		ID: m.ID, Name: m.Name, Dataset: m.Dataset, Refs: m.Refs, Command: m.Command, Workdir: m.Workdir, Env: m.Env,
		MaxAttempts: m.MaxAttempts, Concurrency: m.Concurrency, OnNewRevision: m.OnNewRevision,
		RunOnBaseline: m.RunOnBaseline, VerifyRevision: m.VerifyRevision, Queue: m.Queue, Source: m.Source,
		Enabled: m.Enabled, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
		Timeout: orchestrator.DurationOf(m.Timeout), QuietPeriod: orchestrator.DurationOf(m.QuietPeriod),
		MaxWait: orchestrator.DurationOf(m.MaxWait), Notify: notify,
		Paths: orEmpty(m.Paths), IgnorePaths: orEmpty(m.IgnorePaths), Executor: m.Executor, HFJobs: m.HFJobs,
	}
}

// orEmpty returns list, or an empty list for nil.
func orEmpty(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

// MappingList is the answer of GET /api/v1/mappings.
type MappingList struct {
	Mappings []Mapping `json:"mappings"`
}

// NewMappingList returns the list of mappings as the API shows it; no mappings make an empty list, not null.
func NewMappingList(mappings []orchestrator.Mapping) MappingList {
	list := MappingList{Mappings: make([]Mapping, len(mappings))}
	for i := range mappings {
		list.Mappings[i] = NewMapping(&mappings[i])
	}
	return list
}

// MappingResult is the answer of the calls about one mapping: show, create, replace and disable. Cost, in the
// answer of show, is the estimated cost of the mapping's runs on external executors, in dollars ("$0.42"), and
// CostMicroUSD the same in micro-USD.
type MappingResult struct {
	Mapping      Mapping `json:"mapping"`
	CostMicroUSD *int64  `json:"cost_micro_usd,omitempty"`
	Cost         string  `json:"cost,omitempty"`
}

// MappingCheckRequest is the body of POST /api/v1/mappings/{name}/check: the commit to check, the revision to
// compare it with (its parent when empty), and, for a mapping whose dataset is a pattern, which dataset.
type MappingCheckRequest struct {
	Revision    string `json:"revision"`
	OldRevision string `json:"old_revision,omitempty"`
	Dataset     string `json:"dataset,omitempty"`
}

// MappingCheck is the answer of POST /api/v1/mappings/{name}/check: whether the commit would trigger a run of
// the mapping, and why, by the files it changed. Nothing is queued.
type MappingCheck struct {
	Mapping     string                `json:"mapping"`
	Dataset     string                `json:"dataset"`
	Revision    string                `json:"revision"`
	OldRevision string                `json:"old_revision"`
	Trigger     bool                  `json:"trigger"`
	Files       orchestrator.RunFiles `json:"files"`
}

// NewMappingCost returns the answer of show: the mapping with the estimated cost of its runs.
func NewMappingCost(m *orchestrator.Mapping, costMicroUSD int64) MappingResult {
	return MappingResult{Mapping: NewMapping(m), CostMicroUSD: &costMicroUSD, Cost: Dollars(costMicroUSD)}
}
