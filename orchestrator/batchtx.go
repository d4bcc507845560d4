package orchestrator

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batchTx continues, as a pgx.Tx, a transaction that a batch began: the batch sends BEGIN with the first
// statements of the transaction, saving the round trip that pgx's Begin takes on its own. The connection must
// stay checked out until Commit or Rollback.
type batchTx struct {
	conn   *pgx.Conn
	closed bool
}

// errBatchTxNested says that a batch's transaction has no savepoints.
var errBatchTxNested = errors.New("savepoints are not supported in a transaction begun by a batch")

// Begin is not supported: nothing that continues a batch's transaction needs a savepoint.
func (t *batchTx) Begin(context.Context) (pgx.Tx, error) { return nil, errBatchTxNested }

// Commit commits the transaction. As with pgx's transactions, a transaction that had failed is rolled back
// and reported as pgx.ErrTxCommitRollback.
func (t *batchTx) Commit(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls the transaction back; after Commit or Rollback it returns pgx.ErrTxClosed. A connection
// left inside a transaction by a failed rollback is closed by the pool when released.
func (t *batchTx) Rollback(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	_, err := t.conn.Exec(ctx, "ROLLBACK")
	return err
}

// CopyFrom runs COPY FROM on the transaction's connection.
func (t *batchTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	return t.conn.CopyFrom(ctx, table, columns, src)
}

// SendBatch sends a batch on the transaction's connection.
func (t *batchTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.conn.SendBatch(ctx, b)
}

// LargeObjects is not supported: it returns the zero value, which must not be used.
func (t *batchTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

// Prepare prepares a statement on the transaction's connection.
func (t *batchTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Prepare(ctx, name, sql)
}

// Exec executes a statement in the transaction.
func (t *batchTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.conn.Exec(ctx, sql, args...)
}

// Query runs a query in the transaction.
func (t *batchTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.conn.Query(ctx, sql, args...)
}

// QueryRow runs a query that returns at most one row in the transaction.
func (t *batchTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.conn.QueryRow(ctx, sql, args...)
}

// Conn returns the transaction's connection.
func (t *batchTx) Conn() *pgx.Conn { return t.conn }

var _ pgx.Tx = (*batchTx)(nil)
