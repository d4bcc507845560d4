package bench

import (
	"fmt"
	"strings"
	"time"
)

// Mode selects the sizes of a benchmark run.
type Mode string

// Modes.
const (
	// ModeShort finishes in about a minute; its figures are indicative.
	ModeShort Mode = "short"
	// ModeFull uses the sizes the targets are stated for; it takes ten to twenty minutes.
	ModeFull Mode = "full"
	// ModeSmoke is the short mode cut further, for race-enabled builds, whose figures mean nothing: it only
	// checks that every figure can be produced.
	ModeSmoke Mode = "smoke"
)

// Sizes are the counts and durations of one run.
type Sizes struct {
	IngestLevels     []int         // concurrencies of the ingest figures with the workers running; the last also web-only and with duplicates
	IngestRounds     int           // rounds of each ingest case, each between two pgbench rounds
	HistoryRuns      int           // runs (and deliveries) in the tables for the ingest figure with history
	IngestWarmup     time.Duration // load before each round of each side, not counted
	IngestDuration   time.Duration // measured time of each round of each side
	TriggerSpread    int           // deliveries sent one at a time, for the trigger latency
	TriggerBursts    int           // bursts of TriggerBurstSize deliveries sent at once
	TriggerBurstSize int           // deliveries per burst
	Backlog          int           // trivial runs queued before the workers start
	BacklogTimeLimit time.Duration // longest wait for the backlog to drain
	LogBytes         int64         // bytes the log-capture command writes
	StatusRows       int           // runs, and deliveries, loaded for the status pages
	StatusSamples    int           // requests per status page
	FootprintIngest  time.Duration // c=32 ingest against the child process, for its RSS
	ReadyStarts      int           // child starts on the existing database, for the ready time
	FilesCounts      []int         // files of the repositories whose changed-file check is measured
	FilesReps        int           // repetitions of each changed-file check
	FilesDeliveries  int           // deliveries of each webhook condition of the files phase
}

// SizesFor returns the sizes of mode.
func SizesFor(mode Mode) (Sizes, error) {
	switch mode {
	case ModeFull:
		return Sizes{
			IngestLevels: []int{1, 8, 32}, IngestRounds: 3, IngestWarmup: time.Second, IngestDuration: 5 * time.Second,
			HistoryRuns:   1_000_000,
			TriggerSpread: 500, TriggerBursts: 10, TriggerBurstSize: 50,
			Backlog: 5000, BacklogTimeLimit: 5 * time.Minute, LogBytes: 1 << 30, StatusRows: 1_000_000, StatusSamples: 500,
			FootprintIngest: 10 * time.Second, ReadyStarts: 5,
			FilesCounts: []int{100, 2_000, 20_000}, FilesReps: 10, FilesDeliveries: 500,
		}, nil
	case ModeShort:
		return Sizes{
			IngestLevels: []int{32}, IngestRounds: 1, IngestWarmup: 500 * time.Millisecond, IngestDuration: 2500 * time.Millisecond,
			HistoryRuns:   100_000,
			TriggerSpread: 100, TriggerBursts: 2, TriggerBurstSize: 50,
			Backlog: 500, BacklogTimeLimit: 90 * time.Second, LogBytes: 64 << 20, StatusRows: 100_000, StatusSamples: 100,
			FootprintIngest: 3 * time.Second, ReadyStarts: 3,
			FilesCounts: []int{100, 2_000}, FilesReps: 10, FilesDeliveries: 150,
		}, nil
	case ModeSmoke:
		return Sizes{
			IngestLevels: []int{32}, IngestRounds: 1, IngestWarmup: 200 * time.Millisecond, IngestDuration: 800 * time.Millisecond,
			HistoryRuns:   10_000,
			TriggerSpread: 20, TriggerBursts: 1, TriggerBurstSize: 20,
			Backlog: 100, BacklogTimeLimit: time.Minute, LogBytes: 8 << 20, StatusRows: 10_000, StatusSamples: 20,
			FootprintIngest: time.Second, ReadyStarts: 1,
			FilesCounts: []int{100, 500}, FilesReps: 3, FilesDeliveries: 20,
		}, nil
	}
	return Sizes{}, fmt.Errorf("unknown benchmark mode %q: use %s or %s", mode, ModeShort, ModeFull)
}

// Phases of a run, in the order they run.
const (
	PhaseRuns      = "runs"
	PhaseIngest    = "ingest"
	PhaseTrigger   = "trigger"
	PhaseLog       = "log"
	PhaseStatus    = "status"
	PhaseHistory   = "history"
	PhaseFiles     = "files"
	PhaseFootprint = "footprint"
)

// AllPhases lists every phase.
var AllPhases = []string{PhaseRuns, PhaseIngest, PhaseTrigger, PhaseLog, PhaseStatus, PhaseHistory, PhaseFiles, PhaseFootprint}

// ParsePhases parses a comma-separated list of phases; empty means all of them.
func ParsePhases(s string) (map[string]bool, error) {
	phases := map[string]bool{}
	if strings.TrimSpace(s) == "" {
		for _, p := range AllPhases {
			phases[p] = true
		}
		return phases, nil
	}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		known := false
		for _, q := range AllPhases {
			known = known || p == q
		}
		if !known {
			return nil, fmt.Errorf("unknown benchmark phase %q: use some of %s", p, strings.Join(AllPhases, ","))
		}
		phases[p] = true
	}
	return phases, nil
}
