package sqlite

import (
	"context"
	"encoding/json"
	"time"

	"github.com/apppass/apppass"
)

// Failures implements apppass.ThrottleStore: one indexed read.
func (s *Store) Failures(ctx context.Context, keys []string) (map[string]apppass.FailureCount, error) {
	raw, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	rows, err := s.reads.query(ctx, qFailures, string(raw))
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	out := make(map[string]apppass.FailureCount, len(keys))
	for rows.Next() {
		var key string
		var n int
		var start, last int64
		if err := rows.Scan(&key, &n, &start, &last); err != nil {
			return nil, wrap(err)
		}
		out[key] = apppass.FailureCount{Failures: n, WindowStart: fromMS(start), LastFailure: fromMS(last)}
	}
	return out, wrap(rows.Err())
}

// AddFailure implements apppass.ThrottleStore: one upsert that counts the
// failure in the current window or starts a new one.
func (s *Store) AddFailure(ctx context.Context, key string, now, windowStart time.Time) (apppass.FailureCount, error) {
	var c apppass.FailureCount
	err := s.writer.do(ctx, func(tx *txn) error {
		var start, last int64
		err := tx.QueryRow(`INSERT INTO login_failures (key, failures, window_start, last_failure) VALUES (?1, 1, ?2, ?2)
			ON CONFLICT(key) DO UPDATE SET
				failures = CASE WHEN window_start >= ?3 THEN failures + 1 ELSE 1 END,
				last_failure = CASE WHEN window_start >= ?3 THEN max(last_failure, ?2) ELSE ?2 END,
				window_start = CASE WHEN window_start >= ?3 THEN window_start ELSE ?2 END
			RETURNING failures, window_start, last_failure`, key, ms(now), ms(windowStart)).Scan(&c.Failures, &start, &last)
		c.WindowStart, c.LastFailure = fromMS(start), fromMS(last)
		return err
	})
	return c, err
}

// ClearFailures implements apppass.ThrottleStore.
func (s *Store) ClearFailures(ctx context.Context, key string) error {
	return s.writer.do(ctx, func(tx *txn) error {
		_, err := tx.Exec(`DELETE FROM login_failures WHERE key = ?`, key)
		return err
	})
}

// PurgeFailures implements apppass.ThrottleStore.
func (s *Store) PurgeFailures(ctx context.Context, before time.Time) error {
	return s.writer.do(ctx, func(tx *txn) error {
		_, err := tx.Exec(qPurgeFailures, ms(before))
		return err
	})
}
