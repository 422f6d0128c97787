package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/apppass/apppass"
)

// passwordColumns are read by scanPassword, in this order.
const passwordColumns = `uuid, context_id, user_id, login, app_scope, name, created, digest, key_id,
	expires, idle_expiry, allowed_ips, known_ips,
	last_login, last_login_ip, last_login_device, last_login_user_agent`

type scanner interface{ Scan(dest ...any) error }

func scanPassword(sc scanner, extra ...any) (apppass.Password, error) {
	var p apppass.Password
	var expires, lastLogin sql.NullInt64
	var created, idleMS int64
	var allowed, known string
	var ll apppass.LastLogin
	dest := []any{&p.UUID, &p.Owner.ContextID, &p.Owner.UserID, &p.Owner.Login, &p.AppScope, &p.Name, &created,
		&p.Digest, &p.KeyID, &expires, &idleMS, &allowed, &known, &lastLogin, &ll.IP, &ll.Device, &ll.UserAgent}
	if err := sc.Scan(append(dest, extra...)...); err != nil {
		return p, err
	}
	p.Created = fromMS(created)
	p.Expires = timePtr(expires)
	p.IdleExpiry = time.Duration(idleMS) * time.Millisecond
	for _, s := range strings.Fields(allowed) {
		if prefix, err := netip.ParsePrefix(s); err == nil {
			p.AllowedIPs = append(p.AllowedIPs, prefix)
		}
	}
	p.KnownIPs = strings.Fields(known)
	if lastLogin.Valid {
		ll.Time = fromMS(lastLogin.Int64)
		p.LastLogin = &ll
	}
	return p, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

// insertPassword writes p as a new row, revoked if r is set.
func insertPassword(tx *txn, p *apppass.Password, r *apppass.Revocation) (bool, error) {
	var idleDeadline sql.NullInt64
	if p.IdleExpiry > 0 {
		last := p.Created
		if p.LastLogin != nil {
			last = p.LastLogin.Time
		}
		idleDeadline = sql.NullInt64{Int64: ms(last.Add(p.IdleExpiry)), Valid: true}
	}
	var ll apppass.LastLogin
	var llTime sql.NullInt64
	if p.LastLogin != nil {
		ll, llTime = *p.LastLogin, sql.NullInt64{Int64: ms(p.LastLogin.Time), Valid: true}
	}
	var revoked sql.NullInt64
	reason := ""
	if r != nil {
		revoked, reason = sql.NullInt64{Int64: ms(r.Time), Valid: true}, r.Reason
	}
	res, err := tx.Exec(`INSERT INTO passwords (uuid, context_id, user_id, login, app_scope, name, created, digest, key_id,
		expires, idle_expiry, idle_deadline, allowed_ips, known_ips,
		last_login, last_login_ip, last_login_device, last_login_user_agent, revoked, revoked_reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(uuid) DO NOTHING`,
		p.UUID, p.Owner.ContextID, p.Owner.UserID, p.Owner.Login, p.AppScope, p.Name, ms(p.Created), p.Digest, p.KeyID,
		nullMS(p.Expires), p.IdleExpiry.Milliseconds(), idleDeadline, joinPrefixes(p.AllowedIPs), strings.Join(p.KnownIPs, " "),
		llTime, ll.IP, ll.Device, ll.UserAgent, revoked, reason)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// encodeEvent is an event as the outbox keeps it: JSON, made before the
// write so the writer spends its time on SQLite alone.
func encodeEvent(ev apppass.Event) (string, error) {
	raw, err := json.Marshal(ev)
	return string(raw), err
}

// queueEvent adds the event ev (encoded by encodeEvent) to the outbox of
// password uuid.
func queueEvent(tx *txn, uuid string, ev apppass.Event, encoded string) error {
	_, err := tx.Exec(`INSERT INTO outbox (password_uuid, event_id, event) VALUES (?, ?, ?) ON CONFLICT(event_id) DO NOTHING`,
		uuid, ev.ID, encoded)
	return err
}

// pendingOf returns the encoded unpublished events of password uuid, in
// the order they were written; decodeEvents puts them in publish order.
func pendingOf(q interface {
	Query(string, ...any) (*sql.Rows, error)
}, uuid string) ([]string, error) {
	rows, err := q.Query(qPendingOf, uuid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, rows.Err()
}

func decodeEvents(encoded []string) ([]apppass.Event, error) {
	evs := make([]apppass.Event, len(encoded))
	for i, raw := range encoded {
		if err := json.Unmarshal([]byte(raw), &evs[i]); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(evs, apppass.PublishOrder)
	return evs, nil
}

// Insert implements apppass.PasswordStore: the limit check, the password
// and its created event in one transaction.
func (s *Store) Insert(ctx context.Context, p *apppass.Password, created apppass.Event, limit int, claim *apppass.Claim) (apppass.PendingEvents, error) {
	pending := apppass.PendingEvents{PasswordUUID: p.UUID, Events: []apppass.Event{created}}
	encoded, err := encodeEvent(created)
	if err != nil {
		return pending, err
	}
	err = s.writer.do(ctx, func(tx *txn) error {
		pending.ClaimedUntil = time.Time{}
		var active int
		if err := tx.QueryRow(qCountActive,
			p.Owner.ContextID, p.Owner.UserID).Scan(&active); err != nil {
			return err
		}
		if active >= limit {
			return apppass.ErrLimit
		}
		fresh, err := insertPassword(tx, p, nil)
		if err != nil {
			return err
		}
		if !fresh {
			return errors.New("a password with this UUID exists")
		}
		if err := queueEvent(tx, p.UUID, created, encoded); err != nil {
			return err
		}
		pending.ClaimedUntil, err = takeClaim(tx, p.UUID, claim)
		return err
	})
	return pending, err
}

// takeClaim leases the outbox of uuid to claim's owner, unless another
// owner's lease runs, and returns until when (zero if not).
func takeClaim(tx *txn, uuid string, claim *apppass.Claim) (time.Time, error) {
	if claim == nil {
		return time.Time{}, nil
	}
	now := time.Now()
	until := now.Add(claim.Lease).Truncate(time.Millisecond)
	var one int
	err := tx.QueryRow(qClaim, uuid, claim.Owner, ms(until), ms(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return until, nil
}

// List implements apppass.PasswordStore.
func (s *Store) List(ctx context.Context, owner apppass.User) ([]apppass.Password, error) {
	return s.findPasswords(ctx, qList,
		owner.ContextID, owner.UserID)
}

// ListContext implements apppass.PasswordStore.
func (s *Store) ListContext(ctx context.Context, contextID int64, limit int) ([]apppass.Password, error) {
	return s.findPasswords(ctx, qListContext, contextID, limit)
}

// Expired implements apppass.PasswordStore.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]apppass.Password, error) {
	expired, err := s.findPasswords(ctx, qExpired, ms(now), limit)
	if err != nil || len(expired) >= limit {
		return expired, err
	}
	idle, err := s.findPasswords(ctx, qIdleExpired, ms(now), limit)
	if err != nil {
		return nil, err
	}
	for _, p := range idle {
		if len(expired) < limit && !slices.ContainsFunc(expired, func(e apppass.Password) bool { return e.UUID == p.UUID }) {
			expired = append(expired, p)
		}
	}
	return expired, nil
}

// findPasswords reads the passwords query selects, without their digests.
func (s *Store) findPasswords(ctx context.Context, query string, args ...any) ([]apppass.Password, error) {
	rows, err := s.reads.query(ctx, query, args...)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []apppass.Password
	for rows.Next() {
		p, err := scanPassword(rows)
		if err != nil {
			return nil, wrap(err)
		}
		p.Digest = ""
		out = append(out, p)
	}
	return out, wrap(rows.Err())
}

// FindByDigest implements apppass.PasswordStore: one lookup in the unique
// digest index.
func (s *Store) FindByDigest(ctx context.Context, digest string) (*apppass.Password, error) {
	p, err := scanPassword(s.reads.queryRow(ctx, qFindByDigest, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apppass.ErrRejected
	}
	if err != nil {
		return nil, wrap(err)
	}
	return &p, nil
}

// Revoke implements apppass.PasswordStore: the revocation and its event
// in one transaction.
func (s *Store) Revoke(ctx context.Context, owner apppass.User, uuid string, newEvent func(*apppass.Password) (apppass.Event, error), claim *apppass.Claim) (apppass.PendingEvents, error) {
	var pending []string
	var until time.Time
	err := s.writer.do(ctx, func(tx *txn) error {
		p, err := scanPassword(tx.QueryRow(qRevokeRow, uuid, owner.ContextID, owner.UserID))
		if errors.Is(err, sql.ErrNoRows) {
			return apppass.ErrNotFound
		}
		if err != nil {
			return err
		}
		p.Digest = ""
		ev, err := newEvent(&p)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE passwords SET revoked = ?, revoked_reason = ? WHERE uuid = ?`,
			ms(ev.Timestamp), ev.Data.Reason, uuid); err != nil {
			return err
		}
		encoded, err := encodeEvent(ev)
		if err != nil {
			return err
		}
		if err := queueEvent(tx, uuid, ev, encoded); err != nil {
			return err
		}
		if pending, err = pendingOf(tx, uuid); err != nil {
			return err
		}
		until, err = takeClaim(tx, uuid, claim)
		return err
	})
	if err != nil {
		return apppass.PendingEvents{}, err
	}
	evs, err := decodeEvents(pending)
	return apppass.PendingEvents{PasswordUUID: uuid, Events: evs, ClaimedUntil: until}, err
}

// RecordLogin implements apppass.PasswordStore, in one transaction: the
// check that no other login queued the same used event first, the login
// and the event.
func (s *Store) RecordLogin(ctx context.Context, uuid string, login apppass.LastLogin, idleDeadline *time.Time, used *apppass.Event) (bool, error) {
	var encoded string
	if used != nil {
		var err error
		if encoded, err = encodeEvent(*used); err != nil {
			return false, err
		}
	}
	var queued bool
	err := s.writer.do(ctx, func(tx *txn) error {
		queued = false
		var lastLogin sql.NullInt64
		var known string
		err := tx.QueryRow(qLoginRow, uuid).Scan(&lastLogin, &known)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // revoked meanwhile: leave it alone
		}
		if err != nil {
			return err
		}
		knownIPs := strings.Fields(known)
		if used != nil {
			if used.Type == apppass.EventFirstUse {
				queued = !lastLogin.Valid
			} else {
				queued = !slices.Contains(knownIPs, login.IP)
			}
		}
		if queued && login.IP != "" && !slices.Contains(knownIPs, login.IP) {
			knownIPs = append(knownIPs, login.IP)
		}
		if lastLogin.Valid && lastLogin.Int64 > ms(login.Time) {
			// A login older than the one stored (written late): it moves
			// nothing back, but may still add its address.
			if queued {
				if _, err := tx.Exec(`UPDATE passwords SET known_ips = ? WHERE uuid = ?`, strings.Join(knownIPs, " "), uuid); err != nil {
					return err
				}
			}
		} else if _, err := tx.Exec(`UPDATE passwords SET last_login = ?, last_login_ip = ?, last_login_device = ?,
			last_login_user_agent = ?, known_ips = ?, idle_deadline = coalesce(?, idle_deadline) WHERE uuid = ?`,
			ms(login.Time), login.IP, login.Device, login.UserAgent, strings.Join(knownIPs, " "), nullMS(idleDeadline), uuid); err != nil {
			return err
		}
		if queued {
			return queueEvent(tx, uuid, *used, encoded)
		}
		return nil
	})
	return queued, err
}
