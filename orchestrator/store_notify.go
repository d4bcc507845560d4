package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Storing notifications: written with the final status of their run, then the attempts to deliver them.

// finishedRun is a run that just took a final status, with what deciding its notifications needs.
type finishedRun struct {
	RunID     int64
	MappingID int64
	Ref       string
	Status    RunStatus
	Targets   []NotifyTarget
	Waiting   []int64 // the jobs of the mapping's runs waiting for the slot the run freed, when asked for
}

// Statements of notifyTx.
var (
	// notifyLockSQL takes the turn of mapping $1 and ref $2 among the transactions that notify about their runs.
	notifyLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('orchestrator.notify.' || $1::bigint || '.' || $2, 0))`
	// runPreviousEndSQL reads how the last run of mapping $1 and ref $2 to succeed or fail before run $3 ended.
	runPreviousEndSQL = `
SELECT status FROM runs
WHERE mapping_id = $1 AND ref = $2 AND id <> $3 AND status IN (` + sqlList(RunSucceeded, RunFailed) + `) AND finished_at IS NOT NULL
ORDER BY finished_at DESC, id DESC LIMIT 1`
	// notificationInsertSQL writes the notifications of run $1, one per element of $2 to $5, and returns their ids.
	notificationInsertSQL = `
INSERT INTO notifications (run_id, event, url, format, secret_env)
SELECT $1, u.event, u.url, u.format, u.secret_env
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(event, url, format, secret_env)
RETURNING id`
	// notificationJobIDsSQL records the job ids ($2) of notifications ($1).
	notificationJobIDsSQL = `UPDATE notifications SET job_id = u.job_id FROM unnest($1::bigint[], $2::bigint[]) AS u(id, job_id)
	WHERE notifications.id = u.id`
)

// notifyTx decides, within the transaction that gave the run its final status, which of its mapping's notify
// targets hear about it, and writes one notification and one queue job for each. Since they commit with the
// status, a notification is neither lost nor doubled by a crash.
func (s *Store) notifyTx(ctx context.Context, tx pgx.Tx, run finishedRun) error {
	if (run.Status != RunSucceeded && run.Status != RunFailed) || len(run.Targets) == 0 {
		return nil
	}
	recovered := false
	for _, t := range run.Targets {
		if !t.Wants(NotifyRecovered) {
			continue
		}
		// Finishing runs of one mapping and ref take turns here, so that each sees the one before it.
		if _, err := tx.Exec(ctx, notifyLockSQL, run.MappingID, run.Ref); err != nil {
			return dbError(err, "lock run transitions")
		}
		if run.Status == RunSucceeded {
			var previous RunStatus
			err := tx.QueryRow(ctx, runPreviousEndSQL, run.MappingID, run.Ref, run.RunID).Scan(&previous)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return dbError(err, "find previous run")
			}
			recovered = previous == RunFailed
		}
		break
	}

	var events, urls, formats, secrets []string
	for _, t := range run.Targets {
		if event, ok := t.EventFor(run.Status, recovered); ok {
			events, urls = append(events, string(event)), append(urls, t.URL)
			formats, secrets = append(formats, string(t.Format)), append(secrets, t.SecretEnv)
		}
	}
	if len(events) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, notificationInsertSQL, run.RunID, events, urls, formats, secrets)
	if err != nil {
		return dbError(err, "insert notifications")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return dbError(err, "insert notifications")
	}
	if s.queue == nil {
		return errors.New("store has no queue")
	}
	jobIDs, err := s.queue.EnqueueNotificationsTx(ctx, tx, ids)
	if err != nil {
		return fmt.Errorf("enqueue notifications: %w", err)
	}
	if _, err := tx.Exec(ctx, notificationJobIDsSQL, ids, jobIDs); err != nil {
		return dbError(err, "record notification jobs")
	}
	return nil
}

// notifyLate writes and queues the notifications of a run whose mapping gained notify targets while it ran, in
// a transaction of its own after the one that finished the run.
func (s *Store) notifyLate(ctx context.Context, fin finishedRun) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return dbError(err, "begin notifications")
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := s.notifyTx(ctx, tx, fin); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return dbError(err, "commit notifications")
	}
	return nil
}

const notificationColumns = `n.id, n.run_id, n.event, n.format, n.url, n.secret_env, n.state, n.attempts, n.last_error,
	n.created_at, n.delivered_at`

func notificationDest(n *Notification) []any {
	return []any{&n.ID, &n.RunID, &n.Event, &n.Format, &n.URL, &n.SecretEnv, &n.State, &n.Attempts, &n.LastError,
		&n.CreatedAt, &n.DeliveredAt}
}

// notificationGetSQL reads the notification $1.
const notificationGetSQL = `SELECT ` + notificationColumns + ` FROM notifications n WHERE n.id = $1`

// NotificationForSend returns a notification and its run, for the worker about to send it, or an error with
// CodeNotFound.
func (s *Store) NotificationForSend(ctx context.Context, id int64) (*Notification, *Run, error) {
	var n Notification
	err := s.pool.QueryRow(ctx, notificationGetSQL, id).Scan(notificationDest(&n)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, Errorf(CodeNotFound, "notification %d not found", id)
	}
	if err != nil {
		return nil, nil, dbError(err, "get notification")
	}
	run, err := s.RunGetByID(ctx, n.RunID)
	if err != nil {
		return nil, nil, err
	}
	return &n, run, nil
}

// NotificationAttemptParams records one try to deliver a notification and the state it leaves it in.
type NotificationAttemptParams struct {
	NotificationID int64
	Attempt        int
	StartedAt      time.Time
	Duration       time.Duration
	StatusCode     *int // nil when no answer came
	Error          string
	Response       string
	State          NotificationState // NotificationPending (another attempt follows), NotificationDelivered or NotificationFailed
}

// Statements of NotificationAttemptRecord.
var (
	// notificationAttemptSQL stores attempt $2 of notification $1, or replaces it.
	notificationAttemptSQL = `
INSERT INTO notification_attempts (notification_id, attempt, started_at, duration_ms, status_code, error, response)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (notification_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
	duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, error = EXCLUDED.error,
	response = EXCLUDED.response`
	// notificationStateSQL moves notification $1, unless it is delivered already, to state $2 after attempt $3.
	notificationStateSQL = `
UPDATE notifications SET state = $2, attempts = greatest(attempts, $3), last_error = $4, updated_at = now(),
	delivered_at = CASE WHEN $2 = ` + sqlNotificationDelivered + ` THEN now() END
WHERE id = $1 AND state <> ` + sqlNotificationDelivered
)

// NotificationAttemptRecord stores an attempt and moves the notification to its new state. An attempt recorded
// twice (a job rescued after a crash) keeps the later result.
func (s *Store) NotificationAttemptRecord(ctx context.Context, p NotificationAttemptParams) error {
	batch := &pgx.Batch{}
	batch.Queue(notificationAttemptSQL,
		p.NotificationID, p.Attempt, p.StartedAt, max(p.Duration.Milliseconds(), 0), p.StatusCode, p.Error, p.Response)
	batch.Queue(notificationStateSQL, p.NotificationID, p.State, p.Attempt, p.Error)
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return dbError(err, fmt.Sprintf("record attempt of notification %d", p.NotificationID))
	}
	return nil
}

// notificationListSQL lists the notifications of run $1, each with its attempts as a JSON array.
const notificationListSQL = `
SELECT ` + notificationColumns + `,
	coalesce((SELECT json_agg(json_build_object('attempt', a.attempt, 'started_at', a.started_at,
		'duration_ms', a.duration_ms, 'status_code', a.status_code, 'error', a.error, 'response', a.response)
		ORDER BY a.attempt) FROM notification_attempts a WHERE a.notification_id = n.id), '[]')
FROM notifications n WHERE n.run_id = $1 ORDER BY n.id`

// NotificationList returns the notifications a run fired, first first, each with its attempts.
func (s *Store) NotificationList(ctx context.Context, runID int64) ([]Notification, error) {
	rows, err := s.pool.Query(ctx, notificationListSQL, runID)
	if err != nil {
		return nil, dbError(err, "list notifications")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Notification, error) {
		var n Notification
		err := row.Scan(append(notificationDest(&n), &n.History)...)
		return n, err
	})
	if err != nil {
		return nil, dbError(err, "list notifications")
	}
	return list, nil
}
