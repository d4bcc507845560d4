package orchestrator

import (
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Defaults and limits of a mapping's settings.
const (
	// TimeoutDefault is how long a run's command may take when the mapping does not say.
	TimeoutDefault = 6 * time.Hour
	// TimeoutMax is the longest timeout a mapping may set.
	TimeoutMax = 7 * 24 * time.Hour
	// MaxAttemptsDefault is how many times a failing command is tried when the mapping does not say: once, and
	// one retry for a transient fault such as a preempted machine.
	MaxAttemptsDefault = 2
	// MaxAttemptsMax is the most attempts a mapping may ask for.
	MaxAttemptsMax = 100
	// ConcurrencyDefault is how many runs of a mapping execute at once when it does not say.
	ConcurrencyDefault = 1
	// ConcurrencyMax is the highest concurrency a mapping may set.
	ConcurrencyMax = 1000
	// QueueDefault is the worker pool of a mapping that names none.
	QueueDefault = "runs"
	// QueueNotify is the queue that sends run notifications; every process running workers serves it, and no
	// mapping may send its runs there.
	QueueNotify = "notify"
	// MaxWaitDefault bounds a quiet period when the mapping sets none.
	MaxWaitDefault = 30 * time.Minute
)

// NewRevisionPolicy is what a new revision does to the older runs of the same mapping and ref (a mapping's
// on_new_revision).
type NewRevisionPolicy string

// Policies for a new revision.
const (
	// OnNewRevisionQueue gives every revision its run, in order.
	OnNewRevisionQueue NewRevisionPolicy = "queue"
	// OnNewRevisionSupersede replaces a run that has not started by the newer revision: a run on stale data is
	// rarely worth its GPU hours. The default.
	OnNewRevisionSupersede NewRevisionPolicy = "supersede"
	// OnNewRevisionCancelRunning also stops a running run of an older revision.
	OnNewRevisionCancelRunning NewRevisionPolicy = "cancel_running"
)

// NewRevisionPolicies lists every policy for a new revision.
var NewRevisionPolicies = []NewRevisionPolicy{OnNewRevisionQueue, OnNewRevisionSupersede, OnNewRevisionCancelRunning}

// Valid reports whether p is a policy for a new revision.
func (p NewRevisionPolicy) Valid() bool { return slices.Contains(NewRevisionPolicies, p) }

// RefsDefault is the list of refs a mapping watches when it names none.
var RefsDefault = []string{"refs/heads/main"}

// MappingSource says where a mapping was declared.
type MappingSource string

// Mapping sources.
const (
	SourceFile MappingSource = "file" // declared in the YAML configuration file
	SourceAPI  MappingSource = "api"  // created through the API
)

// MappingSources lists every mapping source.
var MappingSources = []MappingSource{SourceFile, SourceAPI}

// Mapping says which training command runs when a dataset gets new commits on one of the watched refs.
type Mapping struct {
	ID          int64
	Name        string
	Dataset     string
	Refs        []string
	Command     []string
	Workdir     string
	Env         map[string]string
	Timeout     time.Duration
	MaxAttempts int
	// QuietPeriod, when not zero, delays a run until no newer revision of the same ref has arrived for that
	// long, bounded by MaxWait from the first revision of the burst.
	QuietPeriod time.Duration
	MaxWait     time.Duration
	// Concurrency is how many runs of the mapping may execute at once, across all processes.
	Concurrency int
	// OnNewRevision says what a new revision does to older runs of the same ref.
	OnNewRevision NewRevisionPolicy
	// RunOnBaseline makes catch-up run the revision it first sees for a ref, instead of only recording it.
	RunOnBaseline bool
	// VerifyRevision makes the worker check with the Hub that the revision exists before running.
	VerifyRevision bool
	// Queue is the worker pool the runs go to; only processes serving it run them.
	Queue string
	// Paths, when not empty, lists the globs of the files whose change makes a revision worth a run; IgnorePaths
	// those whose change alone never does. See PathFilter.
	Paths       []string
	IgnorePaths []string
	// Notify lists where notifications of the runs' final statuses go.
	Notify []NotifyTarget
	// Executor says where the commands run; HFJobs holds the settings of ExecutorHFJobs, nil otherwise.
	Executor  ExecutorKind
	HFJobs    *HFJobsSettings
	Source    MappingSource
	Enabled   bool
	CreatedAt time.Time
	UpdatedAt time.Time

	// The durations as stored, in milliseconds.
	timeoutMS, quietMS, maxWaitMS int64
}

// fromMillis sets the durations from their stored milliseconds.
func (m *Mapping) fromMillis() {
	m.Timeout = time.Duration(m.timeoutMS) * time.Millisecond
	m.QuietPeriod = time.Duration(m.quietMS) * time.Millisecond
	m.MaxWait = time.Duration(m.maxWaitMS) * time.Millisecond
}

var (
	mappingNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	queueNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// ReservedEnv lists the environment variables the orchestrator sets for every run; a mapping's env may not
// override them.
var ReservedEnv = []string{
	"DATASET_REPO", "DATASET_REF", "DATASET_REVISION", "DATASET_OLD_REVISION",
	"RUN_ID", "RUN_ATTEMPT", "MAPPING_NAME", "RUN_OUTPUT", "DATASET_CHANGED_FILES", "DATASET_REMOVED_FILES",
	"ORCHESTRATOR_ATTEMPT_MARKER",
	"TRACEPARENT", "TRACESTATE",
}

// WithDefaults returns a copy of m with zero settings replaced by their defaults.
func (m Mapping) WithDefaults() Mapping {
	if len(m.Refs) == 0 {
		m.Refs = slices.Clone(RefsDefault)
	}
	if m.Timeout == 0 {
		m.Timeout = TimeoutDefault
	}
	if m.MaxAttempts == 0 {
		m.MaxAttempts = MaxAttemptsDefault
	}
	if m.Source == "" {
		m.Source = SourceFile
	}
	if m.Concurrency == 0 {
		m.Concurrency = ConcurrencyDefault
	}
	if m.Queue == "" {
		m.Queue = QueueDefault
	}
	if m.OnNewRevision == "" {
		m.OnNewRevision = OnNewRevisionSupersede
	}
	if m.Executor == "" {
		m.Executor = ExecutorLocal
	}
	m.HFJobs = m.HFJobs.withDefaults()
	if m.QuietPeriod > 0 && m.MaxWait == 0 {
		m.MaxWait = max(MaxWaitDefault, m.QuietPeriod)
	}
	if m.Notify != nil {
		targets := make([]NotifyTarget, len(m.Notify))
		for i, t := range m.Notify {
			targets[i] = t.withDefaults()
		}
		m.Notify = targets
	}
	return m
}

// Validate checks m, which should have its defaults applied, and returns an *Error with CodeInvalid naming the
// first problem found.
func (m *Mapping) Validate() error {
	invalid := func(format string, args ...any) error {
		return Errorf(CodeInvalid, format, args...)
	}
	if !mappingNameRE.MatchString(m.Name) {
		return invalid("name %q must be 1 to 100 letters, digits, '-' or '_'", m.Name)
	}
	if m.Dataset == "" {
		return invalid("dataset must not be empty")
	}
	if err := validGlob(m.Dataset); err != nil {
		return invalid("dataset %q is not a valid pattern: %v", m.Dataset, err)
	}
	for _, ref := range m.Refs {
		if !strings.HasPrefix(ref, "refs/") {
			return invalid("ref %q must start with refs/ (for example refs/heads/main)", ref)
		}
		if err := validGlob(ref); err != nil {
			return invalid("ref %q is not a valid pattern: %v", ref, err)
		}
	}
	if len(m.Command) == 0 || m.Command[0] == "" {
		return invalid("command must be a non-empty list whose first element is the program to run")
	}
	for i, arg := range m.Command {
		if strings.ContainsRune(arg, 0) {
			return invalid("command[%d] contains a NUL character", i)
		}
	}
	for k, v := range m.Env {
		if !envNameRE.MatchString(k) {
			return invalid("env name %q must be letters, digits and '_', not starting with a digit", k)
		}
		if slices.Contains(ReservedEnv, k) {
			return invalid("env name %q is set by the orchestrator for every run and cannot be overridden", k)
		}
		if strings.ContainsRune(v, 0) {
			return invalid("env %s contains a NUL character", k)
		}
	}
	if m.Timeout <= 0 || m.Timeout > TimeoutMax {
		return invalid("timeout %s must be above 0 and at most %s", m.Timeout, TimeoutMax)
	}
	if m.MaxAttempts < 1 || m.MaxAttempts > MaxAttemptsMax {
		return invalid("max_attempts %d must be between 1 and %d", m.MaxAttempts, MaxAttemptsMax)
	}
	if m.QuietPeriod < 0 || m.QuietPeriod > TimeoutMax {
		return invalid("quiet_period %s must be between 0 and %s", m.QuietPeriod, TimeoutMax)
	}
	if m.MaxWait < 0 || m.MaxWait > TimeoutMax {
		return invalid("max_wait %s must be between 0 and %s", m.MaxWait, TimeoutMax)
	}
	if m.QuietPeriod > 0 && m.MaxWait < m.QuietPeriod {
		return invalid("max_wait %s must not be shorter than quiet_period %s", m.MaxWait, m.QuietPeriod)
	}
	if m.Concurrency < 1 || m.Concurrency > ConcurrencyMax {
		return invalid("concurrency %d must be between 1 and %d", m.Concurrency, ConcurrencyMax)
	}
	if !queueNameRE.MatchString(m.Queue) {
		return invalid("queue %q must be 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit", m.Queue)
	}
	if m.Queue == QueueNotify {
		return invalid("queue %q is reserved for run notifications", m.Queue)
	}
	if len(m.Notify) > NotifyTargetsMax {
		return invalid("notify has %d targets; at most %d are allowed", len(m.Notify), NotifyTargetsMax)
	}
	for i, t := range m.Notify {
		if err := t.validate(); err != nil {
			return notifyTargetError(i, err)
		}
	}
	if !m.OnNewRevision.Valid() {
		return invalid("on_new_revision %q must be %s", m.OnNewRevision, OneOf(NewRevisionPolicies))
	}
	if err := m.PathFilter().Validate(); err != nil {
		return invalid("mapping %q: %s", m.Name, ErrorMessage(err))
	}
	return m.validateExecutor()
}

// PathFilter returns the mapping's paths and ignore_paths.
func (m *Mapping) PathFilter() PathFilter {
	return PathFilter{Paths: m.Paths, IgnorePaths: m.IgnorePaths}
}

// validGlob reports whether pattern is a well-formed path.Match pattern.
func validGlob(pattern string) error {
	_, err := path.Match(pattern, "")
	return err
}

// MatchesDataset reports whether the repo name matches the mapping's dataset pattern. The pattern is a
// path.Match glob, so '*' does not cross a '/': "acme/*" matches every dataset of acme.
func (m *Mapping) MatchesDataset(repoName string) bool {
	ok, _ := path.Match(m.Dataset, repoName)
	return ok
}

// WatchesRef reports whether ref matches one of the mapping's ref patterns.
func (m *Mapping) WatchesRef(ref string) bool {
	for _, pattern := range m.Refs {
		if ok, _ := path.Match(pattern, ref); ok {
			return true
		}
	}
	return false
}

// TimeoutString returns the timeout in Go duration syntax, e.g. "2h0m0s".
func (m Mapping) TimeoutString() string { return m.Timeout.String() }
