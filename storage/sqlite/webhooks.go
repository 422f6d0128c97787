package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/apppass/apppass"
)

const deliveryColumns = `id, event_id, event_type, endpoint, state, attempts, created, next_attempt,
	last_attempt, last_status, last_error, finished, lease_token`

func scanDelivery(sc scanner, extra ...any) (apppass.WebhookDelivery, error) {
	var d apppass.WebhookDelivery
	var created int64
	var next, last, finished sql.NullInt64
	err := sc.Scan(append([]any{&d.ID, &d.EventID, &d.EventType, &d.Endpoint, &d.State, &d.Attempts, &created, &next,
		&last, &d.LastStatus, &d.LastError, &finished, &d.LeaseToken}, extra...)...)
	d.Created, d.NextAttempt, d.LastAttempt, d.Finished = fromMS(created), timePtr(next), timePtr(last), timePtr(finished)
	return d, err
}

// EnqueueWebhook implements apppass.WebhookStore.
func (s *Store) EnqueueWebhook(ctx context.Context, d apppass.WebhookDelivery) (bool, error) {
	var fresh bool
	err := s.writer.do(ctx, func(tx *txn) error {
		res, err := tx.Exec(`INSERT INTO webhook_deliveries (id, event_id, event_type, endpoint, body, state, created, next_attempt)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
			d.ID, d.EventID, d.EventType, d.Endpoint, d.Body, apppass.DeliveryPending, ms(d.Created), ms(d.Created))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		fresh = n == 1
		return err
	})
	return fresh, err
}

// ClaimWebhooks implements apppass.WebhookStore: the due deliveries and
// their lease in one statement.
func (s *Store) ClaimWebhooks(ctx context.Context, now, leaseUntil time.Time, token string, skip []string, limit int) ([]apppass.WebhookDelivery, error) {
	if skip == nil {
		skip = []string{}
	}
	skipped, err := json.Marshal(skip)
	if err != nil {
		return nil, err
	}
	var out []apppass.WebhookDelivery
	err = s.writer.do(ctx, func(tx *txn) error {
		out = nil
		rows, err := tx.Query(qClaimWebhooks, ms(leaseUntil), token, ms(now), string(skipped), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var body []byte
			d, err := scanDelivery(rows, &body)
			if err != nil {
				return err
			}
			d.Body = body
			out = append(out, d)
		}
		return rows.Err()
	})
	slices.SortStableFunc(out, func(a, b apppass.WebhookDelivery) int { return a.NextAttempt.Compare(*b.NextAttempt) })
	return out, err
}

// FinishWebhookAttempt implements apppass.WebhookStore.
func (s *Store) FinishWebhookAttempt(ctx context.Context, id, token string, o apppass.WebhookOutcome) error {
	return s.writer.do(ctx, func(tx *txn) error {
		counted := 0
		if o.Counted {
			counted = 1
		}
		var next, finished sql.NullInt64
		if o.State == apppass.DeliveryPending {
			next = sql.NullInt64{Int64: ms(o.NextAttempt), Valid: true}
		} else {
			finished = sql.NullInt64{Int64: ms(o.At), Valid: true}
		}
		res, err := tx.Exec(`UPDATE webhook_deliveries SET state = ?1, lease_until = 0, lease_token = '',
			attempts = attempts + ?2,
			last_attempt = CASE WHEN ?2 THEN ?3 ELSE last_attempt END,
			last_status = CASE WHEN ?2 THEN ?4 ELSE last_status END,
			last_error = CASE WHEN ?2 THEN ?5 ELSE last_error END,
			next_attempt = ?6, finished = ?7,
			body = CASE WHEN ?1 = 'delivered' THEN NULL ELSE body END
			WHERE id = ?8 AND lease_token = ?9`,
			o.State, counted, ms(o.At), o.Status, o.Error, next, finished, id, token)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err == nil && n == 0 {
			return apppass.ErrLeaseLost
		}
		return err
	})
}

// WebhookDeliveries implements apppass.WebhookStore.
func (s *Store) WebhookDeliveries(ctx context.Context, q apppass.WebhookQuery) ([]apppass.WebhookDelivery, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.reads.query(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries
		WHERE (?1 = '' OR state = ?1) AND (?2 = '' OR endpoint = ?2) ORDER BY created DESC, id LIMIT ?3`, q.State, q.Endpoint, limit)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []apppass.WebhookDelivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, wrap(err)
		}
		d.LeaseToken = ""
		out = append(out, d)
	}
	return out, wrap(rows.Err())
}

// CountWebhookDeliveries implements apppass.WebhookStore.
func (s *Store) CountWebhookDeliveries(ctx context.Context, endpoint, state string) (int64, error) {
	var n int64
	err := s.reads.queryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE endpoint = ? AND state = ?`, endpoint, state).Scan(&n)
	return n, wrap(err)
}

// PurgeWebhookDeliveries implements apppass.WebhookStore.
func (s *Store) PurgeWebhookDeliveries(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.writer.do(ctx, func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM webhook_deliveries WHERE state IN ('delivered', 'failed') AND finished < ?`, ms(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// DisableWebhookEndpoint implements apppass.WebhookStore.
func (s *Store) DisableWebhookEndpoint(ctx context.Context, st apppass.WebhookEndpointState) error {
	return s.writer.do(ctx, func(tx *txn) error {
		_, err := tx.Exec(`INSERT INTO webhook_endpoints (name, url, disabled, reason) VALUES (?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET url = excluded.url, disabled = excluded.disabled, reason = excluded.reason`,
			st.Name, st.URL, ms(st.Disabled), st.Reason)
		return err
	})
}

// EnableWebhookEndpoint implements apppass.WebhookStore.
func (s *Store) EnableWebhookEndpoint(ctx context.Context, name string) (bool, error) {
	var was bool
	err := s.writer.do(ctx, func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM webhook_endpoints WHERE name = ?`, name)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		was = n > 0
		return err
	})
	return was, err
}

// WebhookEndpointStates implements apppass.WebhookStore.
func (s *Store) WebhookEndpointStates(ctx context.Context) ([]apppass.WebhookEndpointState, error) {
	rows, err := s.reads.query(ctx, `SELECT name, url, disabled, reason FROM webhook_endpoints ORDER BY name`)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []apppass.WebhookEndpointState
	for rows.Next() {
		var st apppass.WebhookEndpointState
		var disabled int64
		if err := rows.Scan(&st.Name, &st.URL, &disabled, &st.Reason); err != nil {
			return nil, wrap(err)
		}
		st.Disabled = fromMS(disabled)
		out = append(out, st)
	}
	return out, wrap(rows.Err())
}

// SeenWebhookID implements apppass.ReplayStore.
func (s *Store) SeenWebhookID(ctx context.Context, id string) (bool, error) {
	var one int
	err := s.reads.queryRow(ctx, `SELECT 1 FROM webhook_seen WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap(err)
}

// RememberWebhookID implements apppass.ReplayStore.
func (s *Store) RememberWebhookID(ctx context.Context, id string, at time.Time) error {
	return s.writer.do(ctx, func(tx *txn) error {
		_, err := tx.Exec(`INSERT INTO webhook_seen (id, seen) VALUES (?, ?) ON CONFLICT(id) DO NOTHING`, id, ms(at))
		return err
	})
}

// PurgeWebhookIDs implements apppass.ReplayStore.
func (s *Store) PurgeWebhookIDs(ctx context.Context, before time.Time) error {
	return s.writer.do(ctx, func(tx *txn) error {
		_, err := tx.Exec(`DELETE FROM webhook_seen WHERE seen < ?`, ms(before))
		return err
	})
}
