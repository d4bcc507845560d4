package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// The files phase runs a service of its own, in a database of its own on the benchmark's PostgreSQL, asking a
// stand-in Hub: its mappings, its workers and a Hub that hangs touch no figure of the other phases.
const (
	databaseFiles = "orchestrator_files"
	// The webhook's three conditions: a mapping without paths, one with paths whose Hub answers, one with
	// paths whose Hub hangs.
	mappingFilesPlain = "bench-files-plain"
	datasetFilesPlain = "acme/files-plain"
	mappingFilesPaths = "bench-files-paths"
	datasetFilesPaths = "acme/files-paths"
	mappingFilesHang  = "bench-files-hang"
	datasetFilesHang  = "acme/files-hang"
	// filesTouched is how many files each new revision of a measured repository changes.
	filesTouched = 3
	// webhookRepoFiles is how many data files the repository of the webhook's answering Hub holds.
	webhookRepoFiles = 100
)

// filesWarmup is how many deliveries of each webhook condition go unmeasured before its n measured ones.
func filesWarmup(n int) int { return max(n/10, 2) }

// filesDataset is the repository of n files whose check is measured.
func filesDataset(n int) string { return fmt.Sprintf("acme/files-%d", n) }

// filesFilter is the paths and ignore_paths of the webhook's mappings with paths.
var filesFilter = orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}

// files measures what path-aware triggers cost. First, per revision, the worker's look at a run's changed files
// (orchestrator.FileFinder on the benchmark's PostgreSQL, against a stand-in Hub serving repositories of each
// of FilesCounts files): with neither revision kept, with the older one kept, with both kept, beside the
// stand-in's own listing of a revision. Then the webhook's latency, one delivery at a time, for a mapping
// without paths, one with paths whose Hub answers, and one with paths whose Hub hangs: the webhook never asks
// the Hub, so the three should not differ.
func (b *bench) files(ctx context.Context) (err error) {
	if b.tb == nil {
		return errors.New("the files phase needs the test it runs in (Options.TB) for its stand-in Hub")
	}
	s := b.sizes
	warmup := filesWarmup(s.FilesDeliveries)
	b.logf("files: building repositories of %v files and one of %d commits", s.FilesCounts, s.FilesDeliveries+warmup)
	measured := make([]*filesRepo, len(s.FilesCounts))
	repos := make([]*hubtest.Repo, 0, len(s.FilesCounts)+1)
	for i, n := range s.FilesCounts {
		measured[i] = newFilesRepo(b.tb, filesDataset(n), n)
		repos = append(repos, measured[i].repo)
	}
	// The answering condition's revisions: each changes either a watched data file or the card alone, so that
	// half of the runs are skipped.
	paths := newFilesRepo(b.tb, datasetFilesPaths, webhookRepoFiles)
	pathRevs := []string{paths.head}
	for i := range s.FilesDeliveries + warmup {
		if i%2 == 0 {
			paths.touch(1)
		} else {
			paths.repo.Write("README.md", fmt.Sprintf("# The card, edit %d\n", i))
		}
		pathRevs = append(pathRevs, paths.commit())
	}
	repos = append(repos, paths.repo)
	srv := hubtest.NewServer(b.tb, repos...)

	svc, err := b.env.startFilesService(ctx, srv.URL)
	if err != nil {
		return err
	}
	defer func() {
		// Hanging answers end with their requests, which Close cancels.
		srv.ClearFaults()
		if closeErr := svc.Close(context.WithoutCancel(ctx)); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("stop the files orchestrator: %w", closeErr))
		}
	}()
	client := hub.New(srv.URL, "")
	for _, r := range measured {
		if err := b.filesCheckCost(ctx, svc, srv, client, r); err != nil {
			return err
		}
	}
	return b.filesWebhook(ctx, svc, srv, client, pathRevs)
}

// startFilesService starts the files phase's orchestrator as startStack starts the benchmark's, in the database
// databaseFiles, asking the Hub at hubURL, with the mappings of the webhook's conditions and its workers
// deferred.
func (e *env) startFilesService(ctx context.Context, hubURL string) (*service.Service, error) {
	dbURL, err := e.createDatabase(ctx, databaseFiles)
	if err != nil {
		return nil, err
	}
	cfg := e.serviceConfig(dbURL, service.RoleAll)
	cfg.HFEndpoint, cfg.ChangedFiles = hubURL, service.ChangedFilesFiltered
	svc, err := service.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("configure the files orchestrator: %w", err)
	}
	if err := svc.Run(ctx); err != nil {
		_ = svc.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("start the files orchestrator: %w", err)
	}
	mappings := []orchestrator.Mapping{
		{Name: mappingFilesPlain, Dataset: datasetFilesPlain, Command: []string{"true"}},
		{Name: mappingFilesPaths, Dataset: datasetFilesPaths, Command: []string{"true"},
			Paths: filesFilter.Paths, IgnorePaths: filesFilter.IgnorePaths},
		{Name: mappingFilesHang, Dataset: datasetFilesHang, Command: []string{"true"},
			Paths: filesFilter.Paths, IgnorePaths: filesFilter.IgnorePaths},
	}
	for i := range mappings {
		mappings[i] = e.benchMapping(mappings[i])
	}
	if _, err := svc.Store().MappingSync(ctx, mappings); err != nil {
		_ = svc.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("register the files mappings: %w", err)
	}
	return svc, nil
}

// filesRepo is a dataset of the stand-in Hub laid out as a dataset of parquet shards in LFS, with a card and
// a .gitattributes in git.
type filesRepo struct {
	tb    testing.TB
	repo  *hubtest.Repo
	n     int    // files
	head  string // the last commit
	edits int    // files changed so far, which picks the next to change
}

// newFilesRepo returns a repository of n files (n-2 shards, the card and .gitattributes), committed once.
func newFilesRepo(tb testing.TB, id string, n int) *filesRepo {
	r := &filesRepo{tb: tb, repo: hubtest.NewRepo(tb, id), n: n}
	r.repo.Write(".gitattributes", "*.parquet filter=lfs diff=lfs merge=lfs -text\n")
	r.repo.Write("README.md", "# A dataset of "+strconv.Itoa(n)+" files\n")
	for i := range n - 2 {
		r.repo.WriteLFS(r.shard(i), "shard "+strconv.Itoa(i)+", version 0")
	}
	r.commit()
	return r
}

func (r *filesRepo) shard(i int) string { return fmt.Sprintf("data/train/part-%05d.parquet", i) }

// touch changes the content of k shards, different ones each time.
func (r *filesRepo) touch(k int) {
	for range k {
		i := r.edits % (r.n - 2)
		r.edits++
		r.repo.WriteLFS(r.shard(i), "shard "+strconv.Itoa(i)+", edit "+strconv.Itoa(r.edits))
	}
}

// commit records the changes as a new revision and returns it.
func (r *filesRepo) commit() string {
	r.head = r.repo.Commit(r.tb, "Revision "+strconv.Itoa(r.edits))
	return r.head
}

// revision changes filesTouched shards and commits them.
func (r *filesRepo) revision() string {
	r.touch(filesTouched)
	return r.commit()
}

// checkSample is one measured look, and the Hub requests it made.
type checkSample struct {
	took     time.Duration
	requests int
}

// checkSamples are the repetitions of one case.
type checkSamples []checkSample

func (s checkSamples) latencies() Latencies {
	l := make(Latencies, len(s))
	for i, c := range s {
		l[i] = c.took
	}
	return l
}

// requests returns the Hub requests of the median repetition: they are the same in every one.
func (s checkSamples) requests() int {
	n := make([]int, len(s))
	for i, c := range s {
		n[i] = c.requests
	}
	return medianInt(n)
}

func (s checkSamples) detail() map[string]any {
	l := s.latencies()
	return map[string]any{"p50_ms": ms(l.Percentile(50)), "p90_ms": ms(l.Percentile(90)), "hub_requests": s.requests(),
		"repetitions": len(s)}
}

// filesCheckCost measures, FilesReps times on fresh revisions of r, what FileFinder.Changes costs for a
// revision that changed filesTouched files: cold (neither revision kept: both listed by the Hub, kept and
// compared, by a new finder), steady (the older revision kept, as in a stream of pushes) and kept (both kept,
// a new finder without its memory, no Hub request); beside the stand-in's listing of a revision it has never
// listed, and of one it has (without running git). It also reads the bytes a revision's listing takes in
// revision_files.
func (b *bench) filesCheckCost(ctx context.Context, svc *service.Service, srv *hubtest.Server, client *hub.Client, r *filesRepo) error {
	ds := r.repo.ID()
	b.logf("files: the check of %d revisions of %s (%d files)", b.sizes.FilesReps, ds, r.n)
	look := func(f *orchestrator.FileFinder, old, rev string) (checkSample, error) {
		before := srv.Requests("")
		t0 := time.Now()
		c, err := f.Changes(ctx, ds, old, rev)
		took := time.Since(t0)
		if err != nil {
			return checkSample{}, fmt.Errorf("changed files of %s: %w", ds, err)
		}
		if c.Total() != filesTouched || c.Modified != filesTouched {
			return checkSample{}, fmt.Errorf("changed files of %s from %s to %s: %d (%d modified), want %d modified",
				ds, old, rev, c.Total(), c.Modified, filesTouched)
		}
		return checkSample{took, srv.Requests("") - before}, nil
	}
	list := func(rev string) (checkSample, error) {
		before := srv.Requests("")
		t0 := time.Now()
		tree, err := client.ListTree(ctx, ds, rev, 0)
		took := time.Since(t0)
		if err != nil {
			return checkSample{}, fmt.Errorf("list %s: %w", ds, err)
		}
		if len(tree) != r.n {
			return checkSample{}, fmt.Errorf("list %s: %d files, want %d", ds, len(tree), r.n)
		}
		return checkSample{took, srv.Requests("") - before}, nil
	}
	steadyFinder := orchestrator.NewFileFinder(svc.Store(), client, 0)
	var cold, steady, kept, listNew, listCached checkSamples
	var oldRev, rev string
	for range b.sizes.FilesReps {
		oldRev, rev = r.revision(), r.revision()
		sample, err := look(orchestrator.NewFileFinder(svc.Store(), client, 0), oldRev, rev)
		if err != nil {
			return err
		}
		cold = append(cold, sample)

		next := r.revision()
		if sample, err = look(steadyFinder, rev, next); err != nil {
			return err
		}
		steady = append(steady, sample)

		if sample, err = look(orchestrator.NewFileFinder(svc.Store(), client, 0), oldRev, rev); err != nil {
			return err
		}
		if sample.requests != 0 {
			return fmt.Errorf("changed files of %s between two kept revisions: %d Hub requests, want none", ds, sample.requests)
		}
		kept = append(kept, sample)

		unlisted := r.revision()
		if sample, err = list(unlisted); err != nil {
			return err
		}
		listNew = append(listNew, sample)
		if sample, err = list(unlisted); err != nil {
			return err
		}
		listCached = append(listCached, sample)
	}
	var stored, text int64
	if err := svc.Pool().QueryRow(ctx, `SELECT pg_column_size(files), octet_length(files::text) FROM revision_files
		WHERE dataset = $1 AND revision = $2`, ds, rev).Scan(&stored, &text); err != nil {
		return fmt.Errorf("size of a kept listing: %w", err)
	}
	b.report.detail(fmt.Sprintf("files_check_%d", r.n), map[string]any{
		"files": r.n, "changed_files": filesTouched,
		"cold": cold.detail(), "steady": steady.detail(), "kept": kept.detail(),
		"stand_in_list_new_revision": listNew.detail(), "stand_in_list_listed_revision": listCached.detail(),
		"stored_bytes_per_revision": stored, "stored_json_bytes_per_revision": text,
	})
	limit := listNew.latencies().figure90()
	for _, c := range []struct {
		what    string
		samples checkSamples
	}{
		{"cold (both listed)", cold},
		{"steady (old kept)", steady},
		{fmt.Sprintf("both kept, %s stored each", formatBytes(stored)), kept},
	} {
		b.report.add(Row{
			Name:      fmt.Sprintf("files check, %s files, %s, %s", thousands(r.n), c.what, plural(c.samples.requests(), "Hub request")),
			Ours:      c.samples.latencies().figure90(),
			LimitName: "stand-in Hub's listing of a new revision, " + plural(listNew.requests(), "request"),
			Limit:     ptr(limit),
		})
	}
	return nil
}

// filesWebhook measures the webhook's latency, FilesDeliveries deliveries one at a time after a few unmeasured
// ones, each moving main from the revision before, to a mapping with paths and, in turn with them, to a mapping
// without paths, so that both meet the same work beside them: first with the Hub answering, then with it hanging.
// The workers run, so that the checks and runs of earlier deliveries go on beside the later ones (and, while
// the Hub hangs, the checks wait on it and hold the workers). The stand-in has listed the answering condition's
// revisions beforehand, so that its git commands, which the Hub runs on machines of its own, do not compete
// with the webhook for this one.
func (b *bench) filesWebhook(ctx context.Context, svc *service.Service, srv *hubtest.Server, client *hub.Client, pathRevs []string) error {
	for _, rev := range pathRevs {
		if _, err := client.ListTree(ctx, datasetFilesPaths, rev, 0); err != nil {
			return fmt.Errorf("list %s beforehand: %w", datasetFilesPaths, err)
		}
	}
	if err := svc.StartWorkers(ctx); err != nil {
		return err
	}
	baseURL := "http://" + svc.Addr()
	n := b.sizes.FilesDeliveries
	warmup := filesWarmup(n)
	type stream struct {
		dataset string
		revs    []string
		lat     Latencies
		ids     []int64
	}
	// send delivers the revisions of the streams, one delivery at a time, the streams in turn.
	send := func(streams ...*stream) error {
		for i := 1; i <= n+warmup; i++ {
			for _, st := range streams {
				t0 := time.Now()
				id, answered, err := deliverMove(ctx, b.env.client, baseURL, st.dataset, st.revs[i-1], st.revs[i])
				if err != nil {
					return fmt.Errorf("deliver to %s: %w", st.dataset, err)
				}
				st.ids = append(st.ids, id)
				if i > warmup {
					st.lat = append(st.lat, answered.Sub(t0))
				}
			}
		}
		return nil
	}
	// randomRevs returns from (a new revision when empty) and the revisions that follow it.
	randomRevs := func(from string) []string {
		revs := make([]string, n+warmup+1)
		for i := range revs {
			revs[i] = b.env.shas.next()
		}
		if from != "" {
			revs[0] = from
		}
		return revs
	}

	b.logf("files: the webhook, %d deliveries each to a mapping without paths and one with paths, the Hub answering", n)
	// The stand-in's revisions are real commits, each changing one file from the one before.
	plain := &stream{dataset: datasetFilesPlain, revs: randomRevs("")}
	answering := &stream{dataset: datasetFilesPaths, revs: pathRevs}
	if err := send(plain, answering); err != nil {
		return err
	}
	outcomes, err := waitChecked(ctx, svc.Pool(), answering.ids, 2*time.Minute)
	if err != nil {
		return err
	}
	if outcomes[string(orchestrator.FilesUnwatched)] == 0 || outcomes[string(orchestrator.FilesWatched)] == 0 {
		return fmt.Errorf("the checks of the answering Hub's runs found %v: want some runs skipped and some run", outcomes)
	}

	b.logf("files: the webhook, %d deliveries each to a mapping without paths and one with paths, the Hub hanging", n)
	hangRequests := srv.Requests("/" + datasetFilesHang + "/")
	srv.Fail(hubtest.Fault{Path: "/" + datasetFilesHang + "/", Hang: true})
	plainHanging := &stream{dataset: datasetFilesPlain, revs: randomRevs(plain.revs[len(plain.revs)-1])}
	hanging := &stream{dataset: datasetFilesHang, revs: randomRevs("")}
	if err := send(plainHanging, hanging); err != nil {
		return err
	}
	hangRequests = srv.Requests("/"+datasetFilesHang+"/") - hangRequests
	hangOutcomes, err := filesOutcomes(ctx, svc.Pool(), hanging.ids)
	if err != nil {
		return err
	}
	if hangRequests == 0 || hangOutcomes[string(orchestrator.FilesPending)] == 0 {
		return fmt.Errorf("with the Hub hanging, %d requests were made and the checks found %v: want the workers waiting on the Hub",
			hangRequests, hangOutcomes)
	}

	b.report.detail("files_webhook", map[string]any{
		"no_paths_beside_answering": latencyDetail(plain.lat), "paths_hub_answering": latencyDetail(answering.lat),
		"no_paths_beside_hanging": latencyDetail(plainHanging.lat), "paths_hub_hanging": latencyDetail(hanging.lat),
		"answering_checks": outcomes, "hanging_checks_at_end": hangOutcomes, "hanging_hub_requests": hangRequests,
		"files_timeout_s": svc.Config().FilesTimeout.Seconds(),
	})
	for _, c := range []struct {
		what      string
		ours, lim Latencies
	}{{"Hub answering", answering.lat, plain.lat}, {"Hub hanging", hanging.lat, plainHanging.lat}} {
		b.report.add(Row{
			Name: "webhook c=1, mapping with paths, " + c.what, Ours: c.ours.figure(),
			LimitName: "the same, mapping without paths, sent in turn with them", Limit: ptr(c.lim.figure()),
		})
	}
	return nil
}

// waitChecked polls until no run in ids has its check of changed files pending, or timeout passes, and returns
// what the checks found.
func waitChecked(ctx context.Context, pool *pgxpool.Pool, ids []int64, timeout time.Duration) (map[string]int, error) {
	deadline := time.Now().Add(timeout)
	for {
		outcomes, err := filesOutcomes(ctx, pool, ids)
		if err != nil || outcomes[string(orchestrator.FilesPending)] == 0 {
			return outcomes, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the checks of %d of %d runs still pending after %s", outcomes[string(orchestrator.FilesPending)], len(ids), timeout)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// filesOutcomes counts the runs in ids by their check of changed files ("none" when they need none).
func filesOutcomes(ctx context.Context, pool *pgxpool.Pool, ids []int64) (map[string]int, error) {
	rows, err := pool.Query(ctx, `SELECT coalesce(files_check, 'none'), count(*) FROM runs WHERE id = ANY($1) GROUP BY 1`, ids)
	if err != nil {
		return nil, fmt.Errorf("count checks: %w", err)
	}
	counts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct {
		check string
		n     int
	}, error) {
		var c struct {
			check string
			n     int
		}
		err := row.Scan(&c.check, &c.n)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("count checks: %w", err)
	}
	out := map[string]int{}
	for _, c := range counts {
		out[c.check] = c.n
	}
	return out, nil
}

func latencyDetail(l Latencies) map[string]any {
	return map[string]any{"p50_ms": ms(l.Percentile(50)), "p99_ms": ms(l.Percentile(99)), "n": len(l)}
}

func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// plural returns n and what, with an s unless n is 1: "1 request", "3 requests".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// formatBytes formats a size in bytes, KiB or MiB.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
