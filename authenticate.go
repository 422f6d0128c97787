package apppass

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Used-event types: the first login with a password, and the first from
// an IP address it was not used from before.
const (
	EventFirstUse = "apppassword.first_use"
	EventNewIP    = "apppassword.new_ip"
)

// LoginAttempt is what a gateway hands to Authenticate.
type LoginAttempt struct {
	Login     string
	Password  string
	Protocol  string
	IP        string
	Device    string
	UserAgent string
}

// Authenticated is what a gateway learns from a successful login.
type Authenticated struct {
	UUID      string   `json:"uuid"`
	ContextID int64    `json:"contextId"`
	UserID    int64    `json:"userId"`
	Login     string   `json:"login"`
	AppScope  string   `json:"appScope"`
	Scopes    []string `json:"scopes"`
	// Expires is when the password expires, if it does: a gateway that
	// keeps sessions ends them then at the latest.
	Expires *time.Time `json:"expires,omitempty"`
}

// lastLoginEvery bounds lastLogin writes: at most one per password per
// minute (or per quarter of its idle expiry, if shorter), except for a
// login from a new IP.
const lastLoginEvery = time.Minute

// maxKnownIPs bounds the addresses remembered per password.
const maxKnownIPs = 100

// MaxLoginBytes bounds the login and the password of an attempt.
const MaxLoginBytes = 256

// What a login attempt's device and user agent are cut to before they are
// stored.
const (
	maxDeviceBytes    = 256
	maxUserAgentBytes = 512
)

// truncate cuts s to at most n bytes, at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Authenticate checks an app password login. A password seen recently is
// answered from the cache; otherwise it is one indexed lookup by digest.
// Every refusal looks the same (ErrRejected) to the caller.
func (s *Service) Authenticate(ctx context.Context, a LoginAttempt) (*Authenticated, error) {
	if !KnownProtocol(a.Protocol) {
		return nil, Invalid("protocol", "must be one of "+strings.Join(knownProtocols, ", "))
	}
	// Every gateway's logins are bounded here, whichever way they came:
	// no login or password is that long, and nothing unbounded is kept.
	if len(a.Login) > MaxLoginBytes {
		return nil, Invalid("login", fmt.Sprintf("must be at most %d bytes", MaxLoginBytes))
	}
	if len(a.Password) > MaxLoginBytes {
		return nil, Invalid("password", fmt.Sprintf("must be at most %d bytes", MaxLoginBytes))
	}
	a.Device, a.UserAgent = truncate(a.Device, maxDeviceBytes), truncate(a.UserAgent, maxUserAgentBytes)
	var ip netip.Addr
	if a.IP != "" {
		var err error
		if ip, err = netip.ParseAddr(a.IP); err != nil {
			return nil, Invalid("ip", "must be an IP address")
		}
		ip = ip.Unmap()
		// An address is stored as netip writes it; most come that way.
		var canonical [64]byte
		if b := ip.AppendTo(canonical[:0]); string(b) != a.IP {
			a.IP = string(b)
		}
	}
	now := s.now()
	loginKey := LoginKey(a.Login)
	normalized, wellFormed := NormalizePassword(a.Password)
	var digest string
	if wellFormed {
		digest = s.Digester.Digest(normalized)
	}

	// A cached password is the exact secret a login presented moments ago:
	// no guess can hit it, so the throttle is not consulted for it.
	p, cached := Password{}, false
	if s.Cache != nil && wellFormed {
		p, cached = s.Cache.get(digest, now)
	}
	// The throttle's keys are made when it is consulted or told of a
	// failure: not for a cached password that is accepted.
	var keys throttleKeys
	pairFailed := false
	if !cached {
		if s.Throttle != nil {
			keys = keysFor(loginKey, a.IP)
			var release func()
			var err error
			if pairFailed, release, err = s.Throttle.check(ctx, keys, now); err != nil {
				return nil, err
			}
			defer release() // once decided, and a failure counted
		}
		var gen uint64
		if s.Cache != nil {
			gen = s.Cache.generation()
		}
		if wellFormed {
			found, err := s.Store.FindByDigest(ctx, digest)
			switch {
			case err == nil:
				p = *found
				if s.Cache != nil {
					s.Cache.add(p, now, gen)
				}
			case KindOf(err) != KindRejected:
				return nil, err
			}
		}
	}

	allowed, _ := s.Apps.AppsAllowedOn(a.Protocol)
	if p.UUID == "" || LoginKey(p.Owner.Login) != loginKey || !slices.Contains(allowed, p.AppScope) || !p.allows(ip, now) {
		if s.Throttle != nil {
			if cached {
				keys = keysFor(loginKey, a.IP)
			}
			if err := s.Throttle.failed(ctx, keys, now); err != nil {
				return nil, err
			}
		}
		return nil, ErrRejected
	}
	if pairFailed {
		_ = s.Throttle.Store.ClearFailures(ctx, keys.pair) // best effort: the login succeeded
	}
	if err := s.recordLogin(ctx, &p, a, now); err != nil {
		return nil, err
	}
	app, _ := s.Apps.App(p.AppScope)
	return &Authenticated{UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID,
		Login: p.Owner.Login, AppScope: p.AppScope, Scopes: app.Scopes, Expires: p.Expires}, nil
}

// recordLogin stores the login as p's last login when it is due, and
// queues a used event on a first use or a use from a new IP.
func (s *Service) recordLogin(ctx context.Context, p *Password, a LoginAttempt, now time.Time) error {
	var usedType string
	switch {
	case p.LastLogin == nil && len(p.KnownIPs) == 0:
		usedType = EventFirstUse
	case a.IP != "" && !slices.Contains(p.KnownIPs, a.IP) && len(p.KnownIPs) < maxKnownIPs:
		usedType = EventNewIP
	}
	every := lastLoginEvery
	if p.IdleExpiry > 0 {
		every = min(every, p.IdleExpiry/4)
	}
	if usedType == "" && p.LastLogin != nil && now.Sub(p.LastLogin.Time) < every {
		return nil
	}
	login := LastLogin{Time: now, IP: a.IP, Device: a.Device, UserAgent: a.UserAgent}
	var used *Event
	if usedType != "" {
		ev, err := newEvent(usedType, now, p, "")
		if err != nil {
			return err
		}
		ev.Data.IP, ev.Data.Device, ev.Data.UserAgent = a.IP, a.Device, a.UserAgent
		used = &ev
	}
	if used == nil && s.LastLogins != nil {
		// No event rides on this write: it need not hold up the answer.
		s.LastLogins.record(lastLoginUpdate{uuid: p.UUID, login: login, idleDeadline: p.idleDeadline(now)})
	} else {
		queued, err := s.Store.RecordLogin(ctx, p.UUID, login, p.idleDeadline(now), used)
		if err != nil {
			return err
		}
		if queued {
			s.notify(PendingEvents{PasswordUUID: p.UUID, Events: []Event{*used}})
		}
	}
	updated := *p
	updated.LastLogin = &login
	if a.IP != "" && !slices.Contains(p.KnownIPs, a.IP) && len(p.KnownIPs) < maxKnownIPs {
		updated.KnownIPs = append(slices.Clip(p.KnownIPs), a.IP)
	}
	if s.Cache != nil {
		s.Cache.update(updated)
	}
	return nil
}
