package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/apppass/apppass"
)

// BindDigestKey implements apppass.Store.
func (s *Store) BindDigestKey(ctx context.Context, keyID string) error {
	return s.writer.do(ctx, func(tx *txn) error {
		if _, err := tx.Exec(`INSERT INTO meta (key, value) VALUES ('digest_key_id', ?) ON CONFLICT(key) DO NOTHING`, keyID); err != nil {
			return err
		}
		var stored string
		if err := tx.QueryRow(`SELECT value FROM meta WHERE key = 'digest_key_id'`).Scan(&stored); err != nil {
			return err
		}
		if stored != keyID {
			return apppass.ErrDigestKeyMismatch
		}
		return nil
	})
}

// DigestKeyID implements apppass.Store.
func (s *Store) DigestKeyID(ctx context.Context) (string, error) {
	var id string
	err := s.reads.queryRow(ctx, `SELECT value FROM meta WHERE key = 'digest_key_id'`).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, wrap(err)
}

// CountPasswords implements apppass.StoreTransfer.
func (s *Store) CountPasswords(ctx context.Context) (int64, error) {
	var n int64
	err := s.reads.queryRow(ctx, `SELECT count(*) FROM passwords`).Scan(&n)
	return n, wrap(err)
}

// ExportPasswords implements apppass.StoreTransfer, in one read
// transaction so the page is consistent.
func (s *Store) ExportPasswords(ctx context.Context, after string, limit int) ([]apppass.PasswordRecord, error) {
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, wrap(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.Query(qExport, after, limit)
	if err != nil {
		return nil, wrap(err)
	}
	var out []apppass.PasswordRecord
	for rows.Next() {
		var revoked sql.NullInt64
		var reason string
		p, err := scanPassword(rows, &revoked, &reason)
		if err != nil {
			rows.Close()
			return nil, wrap(err)
		}
		r := apppass.PasswordRecord{Password: p}
		if revoked.Valid {
			r.Revoked = &apppass.Revocation{Time: fromMS(revoked.Int64), Reason: reason}
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	for i := range out {
		encoded, err := pendingOf(tx, out[i].Password.UUID)
		if err != nil {
			return nil, wrap(err)
		}
		if out[i].Pending, err = decodeEvents(encoded); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ImportPasswords implements apppass.StoreTransfer: one transaction per
// call, so a batch is in whole or not at all.
func (s *Store) ImportPasswords(ctx context.Context, rs []apppass.PasswordRecord) (int, error) {
	encoded := make([][]string, len(rs))
	for i := range rs {
		for _, ev := range rs[i].Pending {
			e, err := encodeEvent(ev)
			if err != nil {
				return 0, err
			}
			encoded[i] = append(encoded[i], e)
		}
	}
	var stored int
	err := s.writer.do(ctx, func(tx *txn) error {
		stored = 0
		for i := range rs {
			fresh, err := insertPassword(tx, &rs[i].Password, rs[i].Revoked)
			if err != nil {
				return err
			}
			if !fresh {
				continue
			}
			stored++
			for j, ev := range rs[i].Pending {
				if err := queueEvent(tx, rs[i].Password.UUID, ev, encoded[i][j]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return stored, err
}

// ExportWebhookDeliveries implements apppass.StoreTransfer.
func (s *Store) ExportWebhookDeliveries(ctx context.Context, after string, limit int) ([]apppass.WebhookDelivery, error) {
	rows, err := s.reads.query(ctx, `SELECT `+deliveryColumns+`, body FROM webhook_deliveries
		WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []apppass.WebhookDelivery
	for rows.Next() {
		var body []byte
		d, err := scanDelivery(rows, &body)
		if err != nil {
			return nil, wrap(err)
		}
		d.Body, d.LeaseToken = body, ""
		out = append(out, d)
	}
	return out, wrap(rows.Err())
}

// ImportWebhookDeliveries implements apppass.StoreTransfer.
func (s *Store) ImportWebhookDeliveries(ctx context.Context, ds []apppass.WebhookDelivery) (int, error) {
	var stored int
	err := s.writer.do(ctx, func(tx *txn) error {
		stored = 0
		for _, d := range ds {
			res, err := tx.Exec(`INSERT INTO webhook_deliveries (id, event_id, event_type, endpoint, body, state, attempts, created,
				next_attempt, last_attempt, last_status, last_error, finished)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
				d.ID, d.EventID, d.EventType, d.Endpoint, d.Body, d.State, d.Attempts, ms(d.Created),
				nullMS(d.NextAttempt), nullMS(d.LastAttempt), d.LastStatus, d.LastError, nullMS(d.Finished))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				stored++
			}
		}
		return nil
	})
	return stored, err
}
