// Package sqlite is the embedded store of the one-machine default: every
// storage port of the domain on one SQLite file (modernc.org/sqlite, pure
// Go), with real tables and indexes.
//
// One connection writes, in WAL mode, and a pool of connections reads, so
// reads never wait for writes. Every call that changes two facts together
// (a password and its event, the limit check and the insert) is one
// transaction; writes that arrive together share one transaction and one
// fsync (group commit, writer.go), each in a savepoint of its own, so each
// call still succeeds or fails alone.
//
// What a call answered OK survives: with Synchronous FULL (the default)
// its transaction was synced to the WAL before the answer, so it survives
// the process being killed and the machine losing power. With NORMAL it
// survives the process being killed; a power loss can take back the last
// transactions (the file stays consistent).
//
// Two Store values on one file (two processes, or a test's two handles)
// keep every rule: each write transaction takes SQLite's write lock
// (BEGIN IMMEDIATE) and waits for the other's up to busy_timeout.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/apppass/apppass"
)

// Options tune Open.
type Options struct {
	// Exclusive takes the file's lock (PATH.lock, released by Close or the
	// process ending): a second Open with Exclusive, in this process or
	// another, fails with ErrInUse. apppassd and `store copy` into a file
	// open it so.
	Exclusive bool
	// Synchronous is FULL (the default) or NORMAL; see the package doc.
	Synchronous string
	// Readers is the size of the read pool (default 4).
	Readers int
}

// ErrInUse is returned by an Exclusive Open of a file another holds.
var ErrInUse = errors.New("the store is in use by another process")

// Store implements apppass.Store on one SQLite file.
type Store struct {
	path   string
	read   *sql.DB
	reads  *statements // prepared on read
	writer *writer
	// checkpoints copies the WAL into the file beside the writer.
	checkpoints *checkpointer
	lock        *os.File
	closed      atomic.Bool
}

var _ apppass.Store = (*Store)(nil)

// busyTimeout is how long a write waits for another handle's transaction.
const busyTimeout = 5 * time.Second

// Open opens (creating it if need be) the store in the file at path. Every
// error names the file and says what to do.
func Open(path string, o Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if o.Readers <= 0 {
		o.Readers = 4
	}
	switch o.Synchronous {
	case "":
		o.Synchronous = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("sqlite: synchronous must be FULL or NORMAL, not %q", o.Synchronous)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("%s: cannot create its directory (%v): make the data dir writable by this user, or set APPPASS_DATA_DIR to one that is", abs, err)
	}
	// Created here, not by SQLite, so that it (and the -wal and -shm files
	// SQLite gives the same mode) is the owner's alone.
	if f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	s := &Store{path: abs}
	if o.Exclusive {
		if s.lock, err = lockFile(abs + ".lock"); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*Store, error) {
		s.closeAll()
		return nil, err
	}
	// The connections never fsync at COMMIT: with FULL the writer syncs
	// the WAL itself, batches at a time (writer.go).
	wdb, err := sql.Open("sqlite", dsn(abs, "NORMAL", false))
	if err != nil {
		return fail(err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxIdleTime(0)
	if err := migrate(wdb, abs); err != nil {
		wdb.Close()
		return fail(err)
	}
	var wal *os.File
	if o.Synchronous == "FULL" {
		// migrate wrote in WAL mode, so the file is there, and it stays
		// while a connection is open.
		if wal, err = os.OpenFile(abs+"-wal", os.O_RDWR, 0); err != nil {
			wdb.Close()
			return fail(openError(abs, err))
		}
	}
	if s.writer, err = startWriter(wdb, wal); err != nil {
		wdb.Close()
		return fail(openError(abs, err))
	}
	s.read, err = sql.Open("sqlite", dsn(abs, "NORMAL", true))
	if err != nil {
		return fail(err)
	}
	s.read.SetMaxOpenConns(o.Readers)
	s.read.SetMaxIdleConns(o.Readers)
	s.read.SetConnMaxIdleTime(0)
	s.reads = newStatements(s.read)
	if s.checkpoints, err = startCheckpointer(abs); err != nil {
		return fail(openError(abs, err))
	}
	return s, nil
}

// dsn is the driver's name for the file: WAL, a busy timeout, and for the
// writer, transactions that take the write lock at BEGIN, so one never
// fails half-way for a lock another handle took first.
func dsn(path, synchronous string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	// (journal_mode=WAL is set by migrate, once the file is known to be
	// ours: it is a change to the file, and it stays.)
	q.Add("_pragma", "synchronous("+synchronous+")")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
		// 8 MiB of pages per reader (SQLite's default is 2 MiB): the
		// upper levels of the digest and owner indexes of a million
		// passwords stay in memory.
		q.Add("_pragma", "cache_size(-8192)")
	} else {
		q.Set("_txlock", "immediate") // for migrate's transaction
		// The checkpointer copies the WAL into the file, not a COMMIT of
		// the writer (which would stall every write meanwhile).
		q.Add("_pragma", "wal_autocheckpoint(0)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Close stops the writer, closes the connections and releases the lock.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.closeAll()
}

func (s *Store) closeAll() error {
	var errs []error
	if s.checkpoints != nil {
		errs = append(errs, s.checkpoints.close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.close())
	}
	if s.reads != nil {
		s.reads.close()
	}
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// Ping implements apppass.Store: a read, and while writes have been
// failing for a reason in the file (a full disk, a read-only file), a real
// write too, which keeps the store unavailable until writes have worked
// for a while (recentFailure), so /readyz does not flap on a disk where
// some writes fit and some do not.
func (s *Store) Ping(ctx context.Context) error {
	if s.writer.failedRecently() {
		err := s.writer.do(ctx, func(tx *txn) error {
			_, err := tx.Exec(`INSERT INTO meta(key, value) VALUES('ping', ?)
				ON CONFLICT(key) DO UPDATE SET value = excluded.value`, time.Now().UTC().Format(time.RFC3339Nano))
			return err
		})
		if err != nil {
			return err
		}
		if s.writer.failedRecently() {
			return apppass.Unavailable("the SQLite store", errors.New("writes failed within the last 10 s for want of disk space or a writable file"))
		}
	}
	var one int
	return wrap(s.reads.queryRow(ctx, `SELECT 1`).Scan(&one))
}

// unavailableCodes are the SQLite results that mean the file cannot be
// used now (a full disk, a read-only file, I/O errors, a lock held too
// long): the caller gets -32050 and may try again.
var unavailableCodes = map[int]bool{
	sqlite3.SQLITE_FULL: true, sqlite3.SQLITE_IOERR: true, sqlite3.SQLITE_READONLY: true,
	sqlite3.SQLITE_CANTOPEN: true, sqlite3.SQLITE_BUSY: true, sqlite3.SQLITE_LOCKED: true,
	sqlite3.SQLITE_NOMEM: true, sqlite3.SQLITE_PROTOCOL: true, sqlite3.SQLITE_CORRUPT: true,
	sqlite3.SQLITE_NOTADB: true,
}

// sqliteCode returns the primary SQLite result code in err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// wrap turns errors that mean "the store cannot be used now" into apppass
// unavailable errors; others stay as they are (internal).
func wrap(err error) error {
	if err == nil || apppass.KindOf(err) != apppass.KindInternal {
		return err
	}
	if unavailableCodes[sqliteCode(err)] || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, errClosed) {
		return apppass.Unavailable("the SQLite store", err)
	}
	return err
}

// ms and fromMS keep times as Unix milliseconds, the precision the domain
// keeps.
func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}

func timePtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}
