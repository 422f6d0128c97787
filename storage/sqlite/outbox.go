package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/apppass/apppass"
)

// Pending implements apppass.Outbox.
func (s *Store) Pending(ctx context.Context, limit int, mine string) ([]apppass.PendingEvents, error) {
	rows, err := s.reads.query(ctx, qPendingIDs, ms(time.Now()), limit, mine)
	if err != nil {
		return nil, wrap(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, wrap(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.PendingEvents, 0, len(ids))
	for _, id := range ids {
		encoded, err := pendingOf(readQuerier{ctx, s.reads}, id)
		if err != nil {
			return nil, wrap(err)
		}
		evs, err := decodeEvents(encoded)
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			out = append(out, apppass.PendingEvents{PasswordUUID: id, Events: evs})
		}
	}
	return out, nil
}

// PendingCount implements apppass.Outbox.
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.reads.queryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
	return n, wrap(err)
}

// markPublished deletes ev from the outbox and, once a revoked password
// has nothing left to announce, the password itself: nothing is kept of a
// password after its revoked event is out.
func markPublished(tx *txn, uuid string, ev apppass.Event) error {
	if _, err := tx.Exec(`DELETE FROM outbox WHERE event_id = ? AND password_uuid = ?`, ev.ID, uuid); err != nil {
		return err
	}
	_, err := tx.Exec(qForget, uuid)
	return err
}

// MarkPublished implements apppass.Outbox.
func (s *Store) MarkPublished(ctx context.Context, uuid string, ev apppass.Event) error {
	return s.writer.do(ctx, func(tx *txn) error { return markPublished(tx, uuid, ev) })
}

// ClaimPending implements apppass.Outbox: the check and the lease in one
// statement, in the write transaction that reads the events.
func (s *Store) ClaimPending(ctx context.Context, uuid, owner string, lease time.Duration) ([]apppass.Event, error) {
	var encoded []string
	err := s.writer.do(ctx, func(tx *txn) error {
		encoded = nil
		until, err := takeClaim(tx, uuid, &apppass.Claim{Owner: owner, Lease: lease})
		if err == nil && until.IsZero() {
			// Nothing waits, or another relay holds the lease.
			var claimOwner sql.NullString
			var claimUntil sql.NullInt64
			err := tx.QueryRow(qClaimRow, uuid).Scan(&claimOwner, &claimUntil)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // published and forgotten, or never was
			}
			if err != nil {
				return err
			}
			if pending, err := pendingOf(tx, uuid); err != nil || len(pending) == 0 {
				return err
			}
			return apppass.ErrClaimed
		}
		if err != nil {
			return err
		}
		encoded, err = pendingOf(tx, uuid)
		return err
	})
	if err != nil {
		return nil, err
	}
	return decodeEvents(encoded)
}

// ReleaseClaim implements apppass.Outbox.
func (s *Store) ReleaseClaim(ctx context.Context, uuid, owner string, published *apppass.Event) error {
	return s.writer.do(ctx, func(tx *txn) error {
		if published != nil {
			if err := markPublished(tx, uuid, *published); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE passwords SET claim_owner = NULL, claim_until = NULL WHERE uuid = ? AND claim_owner = ?`, uuid, owner)
		return err
	})
}
