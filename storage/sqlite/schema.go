package sqlite

import (
	"database/sql"
	"fmt"

	sqlite3 "modernc.org/sqlite/lib"
)

// applicationID marks the file as apppass's ("APPS"), so Open can tell
// its own store from another program's SQLite database.
const applicationID = 0x41505053

// migrations[i] takes the schema from version i to i+1 (PRAGMA
// user_version). A release only ever appends to this list.
var migrations = []string{
	// 1: the first release.
	`
CREATE TABLE passwords (
	uuid TEXT PRIMARY KEY,
	context_id INTEGER NOT NULL,
	user_id INTEGER NOT NULL,
	login TEXT NOT NULL,
	app_scope TEXT NOT NULL,
	name TEXT NOT NULL,
	created INTEGER NOT NULL,
	digest TEXT NOT NULL UNIQUE,
	key_id TEXT NOT NULL,
	expires INTEGER,
	idle_expiry INTEGER NOT NULL DEFAULT 0,
	idle_deadline INTEGER,
	allowed_ips TEXT NOT NULL DEFAULT '',
	known_ips TEXT NOT NULL DEFAULT '',
	last_login INTEGER,
	last_login_ip TEXT NOT NULL DEFAULT '',
	last_login_device TEXT NOT NULL DEFAULT '',
	last_login_user_agent TEXT NOT NULL DEFAULT '',
	revoked INTEGER,
	revoked_reason TEXT NOT NULL DEFAULT '',
	claim_owner TEXT,
	claim_until INTEGER
) STRICT;
-- list and the per-user limit: an owner's active passwords, newest first.
CREATE INDEX passwords_owner ON passwords(context_id, user_id, created DESC) WHERE revoked IS NULL;
-- the expiry sweeper.
CREATE INDEX passwords_expires ON passwords(expires) WHERE revoked IS NULL AND expires IS NOT NULL;
CREATE INDEX passwords_idle ON passwords(idle_deadline) WHERE revoked IS NULL AND idle_deadline IS NOT NULL;

-- The transactional outbox: events written with their change, marked
-- published once JetStream acknowledged them (migration 2) and deleted a
-- while later. seq is the order they were written.
CREATE TABLE outbox (
	seq INTEGER PRIMARY KEY,
	password_uuid TEXT NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	event TEXT NOT NULL
) STRICT;
CREATE INDEX outbox_password ON outbox(password_uuid);

CREATE TABLE login_failures (
	key TEXT PRIMARY KEY,
	failures INTEGER NOT NULL,
	window_start INTEGER NOT NULL,
	last_failure INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX login_failures_last ON login_failures(last_failure);

CREATE TABLE webhook_deliveries (
	id TEXT PRIMARY KEY,
	event_id TEXT NOT NULL,
	event_type TEXT NOT NULL,
	endpoint TEXT NOT NULL,
	body BLOB,
	state TEXT NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	created INTEGER NOT NULL,
	next_attempt INTEGER,
	last_attempt INTEGER,
	last_status INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	finished INTEGER,
	lease_until INTEGER NOT NULL DEFAULT 0,
	lease_token TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created DESC, id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint, state);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries(finished) WHERE finished IS NOT NULL;

CREATE TABLE webhook_endpoints (
	name TEXT PRIMARY KEY,
	url TEXT NOT NULL,
	disabled INTEGER NOT NULL,
	reason TEXT NOT NULL
) STRICT;

-- provisioning webhook-ids already processed, for replay protection.
CREATE TABLE webhook_seen (
	id TEXT PRIMARY KEY,
	seen INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX webhook_seen_seen ON webhook_seen(seen);

CREATE TABLE meta (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
`,
	// 2: an event JetStream acknowledged is marked published and kept a
	// while, not deleted, so that one the broker had not synced yet goes
	// out again after a crash.
	`
ALTER TABLE outbox ADD COLUMN published_at INTEGER;
CREATE INDEX outbox_pending ON outbox(password_uuid, seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox(published_at) WHERE published_at IS NOT NULL;
`,
}

// migrate puts the file in WAL mode and brings its schema to the newest
// version, in one write transaction (so two processes starting together
// migrate once), refusing, before it changes anything, a file that is
// not apppass's or is newer than this build.
func migrate(db *sql.DB, path string) error {
	// Look before changing anything: another program's file is left as
	// it was.
	if err := checkOurs(db, path); err != nil {
		return err
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return openError(path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("%s cannot be put in WAL mode (journal mode %s): put the data dir on a local file system", path, mode)
	}
	tx, err := db.Begin()
	if err != nil {
		return openError(path, err)
	}
	defer func() { _ = tx.Rollback() }()
	// Again inside the write lock: another process may have migrated.
	version, err := schemaVersion(tx, path)
	if err != nil {
		return err
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.Exec(migrations[v]); err != nil {
			return openError(path, fmt.Errorf("migrating the schema to version %d: %w", v+1, err))
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA application_id = %d; PRAGMA user_version = %d`, applicationID, len(migrations))); err != nil {
		return openError(path, err)
	}
	// A real write, so a file that can be read but not written is found
	// now rather than at the first add.
	if _, err := tx.Exec(`INSERT INTO meta(key, value) VALUES('opened', datetime('now'))
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`); err != nil {
		return openError(path, err)
	}
	if err := tx.Commit(); err != nil {
		return openError(path, err)
	}
	return nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryRow(query string, args ...any) *sql.Row
}

func checkOurs(db querier, path string) error {
	_, err := schemaVersion(db, path)
	return err
}

// schemaVersion returns the file's schema version (0 for a new file), or
// why the file is not one this build can use.
func schemaVersion(q querier, path string) (int, error) {
	var appID, version, tables int
	if err := q.QueryRow(`PRAGMA application_id`).Scan(&appID); err != nil {
		return 0, openError(path, err)
	}
	if err := q.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return 0, openError(path, err)
	}
	if err := q.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&tables); err != nil {
		return 0, openError(path, err)
	}
	switch {
	case appID == 0 && version == 0 && tables == 0: // a new file
	case appID != applicationID:
		return 0, fmt.Errorf("%s is an SQLite database of another program (application_id %#x), not apppass's store: move it away, or set APPPASS_DATA_DIR to another directory", path, appID)
	case version > len(migrations):
		return 0, fmt.Errorf("%s has schema version %d, newer than this apppassd knows (%d): run the newer apppassd that wrote it, or restore a backup from before it", path, version, len(migrations))
	}
	return version, nil
}

// openError says in one line what is wrong with the file and what to do.
func openError(path string, err error) error {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%s is not an SQLite database (%v): it is not apppass's store; move it away, or set APPPASS_DATA_DIR to another directory", path, err)
	case sqlite3.SQLITE_CORRUPT:
		return fmt.Errorf("%s is damaged (%v): restore it from a backup, or move it away to start empty", path, err)
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
		return fmt.Errorf("%s cannot be written (%v): make it and its directory writable by this user, or set APPPASS_DATA_DIR to a directory that is", path, err)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%s cannot grow: the disk is full (%v); free some space", path, err)
	case sqlite3.SQLITE_BUSY:
		return fmt.Errorf("%s is locked by another process for longer than %s (%v)", path, busyTimeout, err)
	}
	return fmt.Errorf("opening %s: %v", path, err)
}
