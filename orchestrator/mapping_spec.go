package orchestrator

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a length of time as a mapping's settings are written, in the configuration file and in the API:
// Go's syntax, such as "90m" or "2h". Empty means the setting's default.
type Duration string

// DurationOf returns d written in Go's syntax, as the API shows a mapping's durations: "2h0m0s".
func DurationOf(d time.Duration) Duration { return Duration(d.String()) }

// UnmarshalYAML takes a duration string, and reports the line of one that is not a duration.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return fmt.Errorf("line %d: must be a duration such as 90m or 2h", node.Line)
	}
	if _, err := time.ParseDuration(s); err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 90m or 2h", node.Line, s)
	}
	*d = Duration(s)
	return nil
}

// parse returns the duration d is written as, 0 when d is empty. An error, with CodeInvalid, names the setting.
func (d Duration) parse(setting string) (time.Duration, error) {
	s := strings.TrimSpace(string(d))
	if s == "" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, Errorf(CodeInvalid, "%s %q is not a duration such as 90m or 2h", setting, s)
	}
	return v, nil
}

// MappingSpec is a mapping's settings as they are written: one entry of the configuration file's mappings, or
// the body of an API request that creates or replaces a mapping. A setting left empty takes its default, and
// is left out of the JSON encoding, which carries only the settings given.
type MappingSpec struct {
	Name           string            `json:"name" yaml:"name"`
	Dataset        string            `json:"dataset" yaml:"dataset"`
	Refs           []string          `json:"refs,omitempty" yaml:"refs"`
	Command        []string          `json:"command" yaml:"command"`
	Workdir        string            `json:"workdir,omitempty" yaml:"workdir"`
	Env            map[string]string `json:"env,omitempty" yaml:"env"`
	Timeout        Duration          `json:"timeout,omitempty" yaml:"timeout"`
	MaxAttempts    int               `json:"max_attempts,omitempty" yaml:"max_attempts"`
	QuietPeriod    Duration          `json:"quiet_period,omitempty" yaml:"quiet_period"`
	MaxWait        Duration          `json:"max_wait,omitempty" yaml:"max_wait"`
	Concurrency    int               `json:"concurrency,omitempty" yaml:"concurrency"`
	OnNewRevision  NewRevisionPolicy `json:"on_new_revision,omitempty" yaml:"on_new_revision"`
	RunOnBaseline  bool              `json:"run_on_baseline,omitempty" yaml:"run_on_baseline"`
	VerifyRevision bool              `json:"verify_revision,omitempty" yaml:"verify_revision"`
	Queue          string            `json:"queue,omitempty" yaml:"queue"`
	// Paths and IgnorePaths are the globs of the mapping's PathFilter.
	Paths       []string `json:"paths,omitempty" yaml:"paths"`
	IgnorePaths []string `json:"ignore_paths,omitempty" yaml:"ignore_paths"`
	// Notify lists the targets of the runs' notifications; in an API request it replaces the mapping's targets.
	Notify []NotifyTarget `json:"notify,omitempty" yaml:"notify"`
	// Executor says where the commands run (local when empty); HFJobs are the settings of hf-jobs.
	Executor ExecutorKind    `json:"executor,omitempty" yaml:"executor"`
	HFJobs   *HFJobsSettings `json:"hf_jobs,omitempty" yaml:"hf_jobs"`
}

// Mapping returns the mapping s describes, its durations parsed and every other setting as written: no
// defaults applied, not validated. A duration that is not one is an *Error with CodeInvalid naming the setting.
func (s MappingSpec) Mapping() (Mapping, error) {
	m := Mapping{
		Name: s.Name, Dataset: s.Dataset, Refs: s.Refs, Command: s.Command, Workdir: s.Workdir, Env: s.Env,
		MaxAttempts: s.MaxAttempts, Concurrency: s.Concurrency, OnNewRevision: s.OnNewRevision,
		RunOnBaseline: s.RunOnBaseline, VerifyRevision: s.VerifyRevision, Queue: s.Queue, Notify: s.Notify,
		Paths: s.Paths, IgnorePaths: s.IgnorePaths, Executor: s.Executor, HFJobs: s.HFJobs,
	}
	var err error
	if m.Timeout, err = s.Timeout.parse("timeout"); err != nil {
		return m, err
	}
	if m.QuietPeriod, err = s.QuietPeriod.parse("quiet_period"); err != nil {
		return m, err
	}
	if m.MaxWait, err = s.MaxWait.parse("max_wait"); err != nil {
		return m, err
	}
	return m, nil
}
