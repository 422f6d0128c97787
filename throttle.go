package apppass

import (
	"context"
	"time"
)

// ThrottlePolicy says when failed logins start to be refused outright.
// Failures are counted per (login, client IP) pair and per client IP, so a
// flood against one login from one address does not lock the real user
// out from their own addresses, while a flood from one address across many
// logins is throttled too.
type ThrottlePolicy struct {
	PairLimit int           // failures of one login from one IP before blocking
	IPLimit   int           // failures from one IP, any login, before blocking
	Window    time.Duration // failures older than this are forgotten
	MaxBlock  time.Duration // the longest a block lasts
}

// DefaultThrottlePolicy is the policy apppassd starts with.
var DefaultThrottlePolicy = ThrottlePolicy{PairLimit: 5, IPLimit: 50, Window: 15 * time.Minute, MaxBlock: 15 * time.Minute}

// FailureCount is the stored tally of one throttle key.
type FailureCount struct {
	Failures    int
	WindowStart time.Time
	LastFailure time.Time
}

// Throttle applies a ThrottlePolicy to logins using a ThrottleStore.
type Throttle struct {
	Store  ThrottleStore
	Policy ThrottlePolicy
}

type throttleKeys struct{ pair, ip string }

func keysFor(loginKey, ip string) throttleKeys {
	k := throttleKeys{pair: "pair:" + loginKey + "|" + ip}
	if ip != "" {
		k.ip = "ip:" + ip
	}
	return k
}

func (k throttleKeys) list() []string {
	if k.ip == "" {
		return []string{k.pair}
	}
	return []string{k.pair, k.ip}
}

// block is how long a tally blocks logins after its last failure: nothing
// below the limit, then 1 s, doubling with each further failure.
func (p ThrottlePolicy) block(c FailureCount, limit int, now time.Time) time.Duration {
	over := c.Failures - limit
	if limit <= 0 || over < 0 {
		return 0
	}
	d := p.MaxBlock
	if over < 30 {
		d = min(time.Second<<over, p.MaxBlock)
	}
	return max(c.LastFailure.Add(d).Sub(now), 0)
}

// check refuses a login while either tally blocks it. It reports whether
// the pair has failures to clear after a success.
func (t *Throttle) check(ctx context.Context, keys throttleKeys, now time.Time) (pairFailed bool, err error) {
	tallies, err := t.Store.Failures(ctx, keys.list())
	if err != nil {
		return false, err
	}
	wait := max(t.Policy.block(tallies[keys.pair], t.Policy.PairLimit, now), t.Policy.block(tallies[keys.ip], t.Policy.IPLimit, now))
	if wait > 0 {
		return false, throttled(wait)
	}
	return tallies[keys.pair].Failures > 0, nil
}

// failed counts a failed login against both tallies.
func (t *Throttle) failed(ctx context.Context, keys throttleKeys, now time.Time) error {
	for _, k := range keys.list() {
		if _, err := t.Store.AddFailure(ctx, k, now, now.Add(-t.Policy.Window)); err != nil {
			return err
		}
	}
	return nil
}

func throttled(wait time.Duration) *Error {
	return &Error{Kind: KindLimit, Message: "too many failed logins, try again later", RetryAfter: wait}
}
