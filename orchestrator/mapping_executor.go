package orchestrator

import (
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// ExecutorKind says where a mapping's commands run.
type ExecutorKind string

// Executors.
const (
	// ExecutorLocal runs the command as a child process of the worker. The default.
	ExecutorLocal ExecutorKind = "local"
	// ExecutorHFJobs runs the command as a Hugging Face Job, in a container on the Hub's hardware.
	ExecutorHFJobs ExecutorKind = "hf-jobs"
)

// ExecutorKinds lists every executor.
var ExecutorKinds = []ExecutorKind{ExecutorLocal, ExecutorHFJobs}

// Valid reports whether k is a known executor.
func (k ExecutorKind) Valid() bool { return slices.Contains(ExecutorKinds, k) }

// HFJobsFlavorDefault is the hardware of a Job whose mapping names none: the Hub's own default.
const HFJobsFlavorDefault = hub.JobFlavorDefault

// HFJobsFlavors lists the hardware flavors a Job may ask for, as huggingface_hub's SpaceHardware names them.
var HFJobsFlavors = []string{
	"cpu-basic", "cpu-upgrade", "cpu-performance", "cpu-xl", "sprx8",
	"zero-a10g",
	"t4-small", "t4-medium", "l4x1", "l4x4", "l40sx1", "l40sx4", "l40sx8",
	"a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large", "a100x4", "a100x8",
	"h200", "h200x2", "h200x4", "h200x8",
	"inf2x6",
}

// The labels the orchestrator puts on every Job it creates, to find its Jobs again after a restart.
const (
	LabelInstance = "orchestrator-instance"
	LabelMapping  = "orchestrator-mapping"
	LabelRun      = "orchestrator-run"
	LabelAttempt  = "orchestrator-attempt"
)

// HFJobsLabelReserved lists the label keys the orchestrator sets itself; a mapping's labels may not use them.
var HFJobsLabelReserved = []string{LabelInstance, LabelMapping, LabelRun, LabelAttempt}

// HFJobsLabelMaxLen bounds the length of a label's key and of its value.
const HFJobsLabelMaxLen = 100

// HFJobsSettings are the settings of a mapping whose commands run as Hugging Face Jobs.
type HFJobsSettings struct {
	// Namespace is the user or organisation the Jobs run under, and are billed to.
	Namespace string `json:"namespace" yaml:"namespace"`
	// Image is the Docker image the Job runs; Space, instead, a Space ("owner/name") whose image it runs.
	Image string `json:"image,omitempty" yaml:"image"`
	Space string `json:"space,omitempty" yaml:"space"`
	// Flavor is the hardware; HFJobsFlavorDefault when empty.
	Flavor string `json:"flavor,omitempty" yaml:"flavor"`
	// Secrets names environment variables of the orchestrator whose values the Job gets as secrets, under the
	// same names. Only the names are stored and shown.
	Secrets []string `json:"secrets,omitempty" yaml:"secrets"`
	// MountDataset, when set, is where in the container the run's dataset, at the run's revision, is mounted.
	MountDataset string `json:"mount_dataset,omitempty" yaml:"mount_dataset"`
	// Labels are put on every Job, beside the orchestrator's own.
	Labels map[string]string `json:"labels,omitempty" yaml:"labels"`
}

var (
	// hubNameRE is a Hub user or organisation name.
	hubNameRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$`)
	// hubRepoNameRE is the name part of a Hub repository id.
	hubRepoNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,96}$`)
	labelRE       = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)
)

// withDefaults returns a copy of h with the default flavor, nil for nil.
func (h *HFJobsSettings) withDefaults() *HFJobsSettings {
	if h == nil {
		return nil
	}
	c := *h
	if c.Flavor == "" {
		c.Flavor = HFJobsFlavorDefault
	}
	return &c
}

// validateExecutor checks the executor and its settings of m.
func (m *Mapping) validateExecutor() error {
	invalid := func(format string, args ...any) error {
		return Errorf(CodeInvalid, format, args...)
	}
	if !m.Executor.Valid() {
		return invalid("executor %q must be %s", m.Executor, OneOf(ExecutorKinds))
	}
	if m.Executor != ExecutorHFJobs {
		if m.HFJobs != nil {
			return invalid("hf_jobs is set but executor is %q: set executor: %s to run on Hugging Face Jobs", m.Executor, ExecutorHFJobs)
		}
		return nil
	}
	h := m.HFJobs
	if h == nil {
		return invalid("executor %s needs hf_jobs settings (at least namespace, and image or space)", ExecutorHFJobs)
	}
	if m.Workdir != "" {
		return invalid("workdir is not allowed with executor %s: the command runs in the image's own directory, in a container", ExecutorHFJobs)
	}
	if h.Namespace == "" {
		return invalid("hf_jobs.namespace must name the Hub user or organisation the Jobs run under")
	}
	if !hubNameRE.MatchString(h.Namespace) {
		return invalid("hf_jobs.namespace %q is not a Hub user or organisation name: letters, digits, '-', '_' or '.', at most 96", h.Namespace)
	}
	switch {
	case h.Image == "" && h.Space == "":
		return invalid("hf_jobs needs image (a Docker image) or space (owner/name of a Space)")
	case h.Image != "" && h.Space != "":
		return invalid("hf_jobs.image and hf_jobs.space are both set: give one of them")
	case h.Image != "" && (strings.ContainsAny(h.Image, " \t\n\x00") || strings.TrimSpace(h.Image) != h.Image):
		return invalid("hf_jobs.image %q must not contain spaces", h.Image)
	case h.Space != "":
		owner, name, ok := strings.Cut(h.Space, "/")
		if !ok || !hubNameRE.MatchString(owner) || !hubRepoNameRE.MatchString(name) {
			return invalid("hf_jobs.space %q must be owner/name of a Space", h.Space)
		}
	}
	if !slices.Contains(HFJobsFlavors, h.Flavor) {
		return invalid("hf_jobs.flavor %q is not a known flavor: one of %s", h.Flavor, strings.Join(HFJobsFlavors, ", "))
	}
	seen := make(map[string]bool, len(h.Secrets))
	for _, name := range h.Secrets {
		switch {
		case !envNameRE.MatchString(name):
			return invalid("hf_jobs.secrets name %q must be letters, digits and '_', not starting with a digit", name)
		case slices.Contains(ReservedEnv, name):
			return invalid("hf_jobs.secrets name %q is set by the orchestrator for every run", name)
		case seen[name]:
			return invalid("hf_jobs.secrets names %q twice", name)
		}
		if _, inEnv := m.Env[name]; inEnv {
			return invalid("hf_jobs.secrets name %q is also in env: give it in one place", name)
		}
		seen[name] = true
	}
	if h.MountDataset != "" && (!path.IsAbs(h.MountDataset) || path.Clean(h.MountDataset) == "/") {
		return invalid("hf_jobs.mount_dataset %q must be an absolute path in the container, such as /data", h.MountDataset)
	}
	keys := make([]string, 0, len(h.Labels))
	for k := range h.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := h.Labels[k]
		switch {
		case k == "" || len(k) > HFJobsLabelMaxLen || !labelRE.MatchString(k):
			return invalid("hf_jobs.labels key %q must be 1 to %d letters, digits, '.', '_' or '-'", k, HFJobsLabelMaxLen)
		case slices.Contains(HFJobsLabelReserved, k):
			return invalid("hf_jobs.labels key %q is set by the orchestrator on every Job", k)
		case len(v) > HFJobsLabelMaxLen || !labelRE.MatchString(v):
			return invalid("hf_jobs.labels %s value %q must be at most %d letters, digits, '.', '_' or '-'", k, v, HFJobsLabelMaxLen)
		}
	}
	return nil
}

// MissingSecrets returns, in order, the names of the mapping's hf_jobs secrets that lookup does not find (or
// finds empty): Jobs of the mapping could not be given them.
func (m *Mapping) MissingSecrets(lookup func(string) (string, bool)) []string {
	if m.HFJobs == nil {
		return nil
	}
	var missing []string
	for _, name := range m.HFJobs.Secrets {
		if v, ok := lookup(name); !ok || v == "" {
			missing = append(missing, name)
		}
	}
	return missing
}
