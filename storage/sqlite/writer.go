package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apppass/apppass"
)

// writer runs every write of one Store on its one connection.
//
// Writes that queue up while a transaction runs are committed together in
// the next one (group commit): one fsync then serves many calls, which is
// what lets a single SQLite writer keep up with many concurrent adds. A
// write refused by a rule (the limit, a lost claim) fails alone and the
// others commit. A write that fails inside SQLite itself (a full disk, an
// I/O error) ends the transaction, since SQLite may have rolled it back
// already; the other writes of that batch then run again in a fresh one,
// or fail with it when the file cannot be written at all.
//
// With durable set, a write is answered only once its transaction is on
// disk. SQLite's connection runs with synchronous=NORMAL, so its COMMIT
// only writes the WAL, and the writer's syncer fdatasyncs the WAL file for
// all the transactions committed since its last sync, while the writer
// runs the next batch: durable as synchronous=FULL (which fsyncs the WAL
// at every COMMIT, with nothing else running meanwhile), at the pace of
// NORMAL. Between its COMMIT and that sync, a transaction is visible to
// reads though not yet answered; a power loss in that instant can take
// it back, as it can any transaction not yet answered.
//
// A write function must touch nothing but its transaction, may run more
// than once (only its last run's effects are kept), and must decide a
// refusal of its own before it changes anything: an error that is not
// SQLite's is its answer, and whatever it wrote commits with the batch.
type writer struct {
	db *sql.DB
	// conn is the one connection all writes run on. Its transactions are
	// BEGIN IMMEDIATE ... COMMIT statements of ours, not database/sql's,
	// so that statements prepared on the connection serve every one.
	conn   *sql.Conn
	stmts  *statements
	queue  chan *writeOp
	quit   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	// failedAt is when a write last failed for a reason in the file (a
	// full disk, a read-only file), in Unix nanoseconds; see Ping.
	failedAt atomic.Int64
	// wal is the WAL file the syncer fdatasyncs (nil: not durable).
	wal      *os.File
	toSync   chan committed
	syncDone chan struct{}
}

// committed is a batch committed but not yet synced, with its answers.
type committed struct {
	ops     []*writeOp
	results []error
}

type writeOp struct {
	ctx    context.Context
	fn     func(*txn) error
	result chan error
}

// txn is the write transaction a write function runs in. Its statements
// are prepared once on the writer's connection and kept: SQLite parses
// each query once, not at every call.
type txn struct {
	stmts *statements
}

func (t *txn) stmt(q string) (*sql.Stmt, error) { return t.stmts.get(q) }

// Exec runs a statement that returns no rows.
func (t *txn) Exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.Exec(args...)
}

// Query runs a statement that returns rows.
func (t *txn) Query(q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.Query(args...)
}

// QueryRow runs a statement that returns at most one row.
func (t *txn) QueryRow(q string, args ...any) scanner {
	st, err := t.stmt(q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRow(args...)
}

// errRow is a row that fails to scan with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// preparer is a *sql.DB or a *sql.Conn.
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// statements prepares each query once and keeps it.
type statements struct {
	on preparer
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStatements(on preparer) *statements { return &statements{on: on, m: map[string]*sql.Stmt{}} }

func (c *statements) get(q string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st, nil
	}
	st, err := c.on.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, err
	}
	c.m[q] = st
	return st, nil
}

func (c *statements) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.get(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *statements) queryRow(ctx context.Context, q string, args ...any) scanner {
	st, err := c.get(q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// readQuerier runs queries of the read pool under ctx.
type readQuerier struct {
	ctx   context.Context
	reads *statements
}

func (r readQuerier) Query(q string, args ...any) (*sql.Rows, error) {
	return r.reads.query(r.ctx, q, args...)
}

func (c *statements) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// maxBatch bounds the writes committed in one transaction.
const maxBatch = 64

var errClosed = errors.New("the store is closed")

// startWriter starts the writer of db, durable (see writer) if the WAL
// file is given.
func startWriter(db *sql.DB, wal *os.File) (*writer, error) {
	conn, err := db.Conn(context.Background())
	if err != nil {
		return nil, err
	}
	w := &writer{db: db, conn: conn, stmts: newStatements(conn), queue: make(chan *writeOp),
		quit: make(chan struct{}), done: make(chan struct{}), wal: wal}
	if wal != nil {
		w.toSync, w.syncDone = make(chan committed, maxBatch), make(chan struct{})
		go w.syncer()
	}
	go w.run()
	return w, nil
}

// syncer answers committed batches once an fdatasync of the WAL that
// began after their COMMIT has returned: one sync for all that wait.
func (w *writer) syncer() {
	defer close(w.syncDone)
	for first := range w.toSync {
		waiting := []committed{first}
	more:
		for {
			select {
			case c, ok := <-w.toSync:
				if !ok {
					break more
				}
				waiting = append(waiting, c)
			default:
				break more
			}
		}
		err := fdatasync(w.wal)
		if err != nil {
			w.failedAt.Store(time.Now().UnixNano())
			err = apppass.Unavailable("the SQLite store", fmt.Errorf("syncing %s: %w", w.wal.Name(), err))
		}
		for _, c := range waiting {
			for i, op := range c.ops {
				if err != nil {
					op.result <- err
				} else {
					op.result <- c.results[i]
				}
			}
		}
	}
}

// do runs fn in a write transaction and returns its error, or the
// transaction's. It returns only once the outcome is known: an error means
// nothing of fn was stored. A write whose ctx ends before it starts is not
// run.
func (w *writer) do(ctx context.Context, fn func(*txn) error) error {
	op := &writeOp{ctx: ctx, fn: fn, result: make(chan error, 1)}
	select {
	case w.queue <- op:
	case <-ctx.Done():
		return wrap(ctx.Err())
	case <-w.quit:
		return wrap(errClosed)
	}
	return <-op.result
}

// recentFailure is how long after a write failed for a reason in the
// file the store still reports itself unavailable: on a full disk some
// writes fit in the WAL's space and some do not, and /readyz should not
// flap between the two.
const recentFailure = 10 * time.Second

// failedRecently reports whether a write failed for a reason in the file
// within recentFailure.
func (w *writer) failedRecently() bool {
	at := w.failedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < recentFailure
}

func (w *writer) close() error {
	if w.closed.Swap(true) {
		return nil
	}
	close(w.quit)
	<-w.done
	if w.wal != nil {
		close(w.toSync)
		<-w.syncDone
		w.wal.Close()
	}
	w.stmts.close()
	return errors.Join(w.conn.Close(), w.db.Close())
}

func (w *writer) run() {
	defer close(w.done)
	for {
		var first *writeOp
		select {
		case first = <-w.queue:
		case <-w.quit:
			return
		}
		batch := []*writeOp{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case op := <-w.queue:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

// commit runs batch in as few transactions as it takes and answers every
// write in it.
func (w *writer) commit(batch []*writeOp) {
	for len(batch) > 0 {
		live := batch[:0]
		for _, op := range batch {
			if err := op.ctx.Err(); err != nil {
				op.result <- wrap(err)
				continue
			}
			live = append(live, op)
		}
		batch = live
		if len(batch) == 0 {
			return
		}
		results, failed, err := w.attempt(batch)
		if failed < 0 {
			if w.wal != nil {
				w.toSync <- committed{ops: batch, results: results}
				return
			}
			for i, op := range batch {
				op.result <- results[i]
			}
			return
		}
		err = wrap(err)
		if failsBatch(err) {
			// The file cannot be written: nothing in this batch can be.
			w.failedAt.Store(time.Now().UnixNano())
			for _, op := range batch {
				op.result <- err
			}
			return
		}
		// One write hit an SQLite error of its own (a constraint, say):
		// it fails, the others go again.
		batch[failed].result <- err
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// attempt runs batch in one transaction. It returns each write's result,
// or the index of the write whose SQLite error ended the transaction (-1
// if none did; then it committed) and that error; an error of BEGIN or
// COMMIT is marked errBatch.
func (w *writer) attempt(batch []*writeOp) (results []error, failed int, err error) {
	exec := func(q string) error {
		st, err := w.stmts.get(q)
		if err == nil {
			_, err = st.Exec()
		}
		return err
	}
	rollback := func() { _ = exec(`ROLLBACK`) }
	if err := exec(`BEGIN IMMEDIATE`); err != nil {
		return nil, 0, errors.Join(err, errBatch)
	}
	results = make([]error, len(batch))
	t := &txn{stmts: w.stmts}
	for i, op := range batch {
		err := op.fn(t)
		if err != nil && sqliteCode(err) != 0 {
			rollback()
			return nil, i, err
		}
		results[i] = err
	}
	if err := exec(`COMMIT`); err != nil {
		// COMMIT failed as a whole: no write of the batch is stored.
		rollback()
		return nil, 0, errors.Join(err, errBatch)
	}
	return results, -1, nil
}

// errBatch marks a failed BEGIN or COMMIT: no write of the batch is stored.
var errBatch = errors.New("the write transaction failed")

// failsBatch reports whether err, which ended a transaction, fails every
// write of its batch rather than the one that met it.
func failsBatch(err error) bool {
	return errors.Is(err, errBatch) || unavailableCodes[sqliteCode(err)]
}
