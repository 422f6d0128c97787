package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"slices"
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
	err := s.reads.queryRow(ctx, qPendingCount).Scan(&n)
	return n, wrap(err)
}

// MarkPublished implements apppass.Outbox: the marks and the end of the
// claim in one transaction.
func (s *Store) MarkPublished(ctx context.Context, uuid, owner string, evs []apppass.Event) error {
	now := ms(time.Now())
	return s.writer.do(ctx, func(tx *txn) error {
		for _, ev := range evs {
			if _, err := tx.Exec(qMarkPublished, now, ev.ID, uuid); err != nil {
				return err
			}
		}
		return releaseClaim(tx, uuid, owner)
	})
}

// PurgePublished implements apppass.Outbox.
func (s *Store) PurgePublished(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int
	err := s.writer.do(ctx, func(tx *txn) error {
		n = 0
		rows, err := tx.Query(qPurgePublished, ms(before), limit)
		if err != nil {
			return err
		}
		var uuids []string
		for rows.Next() {
			var uuid string
			if err := rows.Scan(&uuid); err != nil {
				rows.Close()
				return err
			}
			n++
			if !slices.Contains(uuids, uuid) {
				uuids = append(uuids, uuid)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, uuid := range uuids {
			if _, err := tx.Exec(qForget, uuid); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// RequeuePublished implements apppass.Outbox.
func (s *Store) RequeuePublished(ctx context.Context) (int64, error) {
	var n int64
	err := s.writer.do(ctx, func(tx *txn) error {
		res, err := tx.Exec(`UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL`)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
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
func (s *Store) ReleaseClaim(ctx context.Context, uuid, owner string) error {
	return s.writer.do(ctx, func(tx *txn) error { return releaseClaim(tx, uuid, owner) })
}

func releaseClaim(tx *txn, uuid, owner string) error {
	_, err := tx.Exec(`UPDATE passwords SET claim_owner = NULL, claim_until = NULL WHERE uuid = ? AND claim_owner = ?`, uuid, owner)
	return err
}
