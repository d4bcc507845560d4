package bench

import (
	"context"
	"fmt"
)

// ingestRowHistory names the row of ingest with history in the tables.
const ingestRowHistory = "ingest c=%d, workers running, %s runs already in the tables"

// history measures ingest as workersCase does, at the top ingest level, with HistoryRuns runs already in the
// tables: the status pages' rows (deliveries, their refs, decisions, runs and attempts, as the webhook and the
// workers write them), loaded with generate_series when the status phase has not loaded them. River's finished
// jobs are not part of that history: River deletes them a day after they finish, so that a production database
// holds a day's jobs, not its whole history. It shows how a delivery's cost grows with the history; the ratio is
// against pgbench rounds beside it, as in the ingest phase.
func (b *bench) history(ctx context.Context) error {
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	n := b.sizes.HistoryRuns
	loaded, _ := b.report.Details["status_rows"].(int)
	if more := n - loaded; more > 0 {
		b.logf("history: loading %d runs and %d deliveries", more, more)
		if _, _, err := b.loadStatusRows(ctx, more); err != nil {
			return err
		}
	}
	var total int64
	if err := b.env.observer.QueryRow(ctx, `SELECT count(*) FROM runs`).Scan(&total); err != nil {
		return fmt.Errorf("count runs: %w", err)
	}
	b.report.detail("history_runs_in_tables", total)
	c := b.sizes.IngestLevels[len(b.sizes.IngestLevels)-1]
	cs := b.workersCase(fmt.Sprintf(ingestRowHistory, c, thousands(n)), c)
	if err := b.interleave(ctx, PhaseHistory, c, []ingestCase{cs}); err != nil {
		return err
	}
	return b.env.exec(ctx, `VACUUM (ANALYZE)`)
}
