package apppass

import (
	"context"
	"math"
	"net/netip"
	"sync"
	"time"
)

// ThrottlePolicy says when failed logins start to be refused outright.
// Failures are counted per (login, client IP) pair and per client IP, so a
// flood against one login from one address does not lock the real user
// out from their own addresses, while a flood from one address across many
// logins is throttled too. An IPv6 address counts as its /64: one site's
// network, which hands its hosts any address in it.
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

	// inFlight counts the attempts of this process not yet decided, per
	// key, so that concurrent guesses cannot overshoot a limit (see check).
	mu       sync.Mutex
	inFlight map[string]int
}

type throttleKeys struct{ pair, ip string }

// keysFor names the tallies of a login from ip; an IPv6 address is
// counted as its /64.
func keysFor(loginKey, ip string) throttleKeys {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		if p, err := a.Prefix(64); err == nil {
			ip = p.String()
		}
	}
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

// maxAdmitWait bounds how long an attempt waits for one in flight on the
// same tally to be decided.
const maxAdmitWait = 3 * time.Second

// check refuses a login while either tally blocks it. It reports whether
// the pair has failures to clear after a success, and returns the release
// of the attempt's place, to call once it is decided (and its failure, if
// it failed, counted).
//
// A tally admits at most as many attempts at once as failures are left
// before its limit (at least one): attempts past that wait until those in
// flight are decided, and look again. So guesses sent all at once cannot
// overshoot a limit, and honest logins sent at once (a mail client opening
// several connections) wait a moment at most. Each apppassd counts its
// own attempts: n replicas can overshoot by n at most.
func (t *Throttle) check(ctx context.Context, keys throttleKeys, now time.Time) (pairFailed bool, release func(), err error) {
	deadline := time.Now().Add(maxAdmitWait)
	for {
		tallies, err := t.Store.Failures(ctx, keys.list())
		if err != nil {
			return false, nil, err
		}
		wait := max(t.Policy.block(tallies[keys.pair], t.Policy.PairLimit, now), t.Policy.block(tallies[keys.ip], t.Policy.IPLimit, now))
		if wait > 0 {
			return false, nil, throttled(wait)
		}
		if release := t.admit(keys, tallies); release != nil {
			return tallies[keys.pair].Failures > 0, release, nil
		}
		if time.Now().After(deadline) {
			return false, nil, throttled(time.Second)
		}
		select {
		case <-ctx.Done():
			return false, nil, Unavailable("the throttle", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// admit takes a place for the attempt on each of its tallies, if every one
// has a place left, and returns its release (nil if it had to wait).
func (t *Throttle) admit(keys throttleKeys, tallies map[string]FailureCount) func() {
	capacity := map[string]int{keys.pair: headroom(t.Policy.PairLimit, tallies[keys.pair])}
	if keys.ip != "" {
		capacity[keys.ip] = headroom(t.Policy.IPLimit, tallies[keys.ip])
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, c := range capacity {
		if t.inFlight[k] >= c {
			return nil
		}
	}
	if t.inFlight == nil {
		t.inFlight = map[string]int{}
	}
	for k := range capacity {
		t.inFlight[k]++
	}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		for k := range capacity {
			if t.inFlight[k]--; t.inFlight[k] <= 0 {
				delete(t.inFlight, k)
			}
		}
	}
}

// headroom is how many attempts a tally admits at once: the failures left
// before its limit, at least one; no bound when the limit is off.
func headroom(limit int, c FailureCount) int {
	if limit <= 0 {
		return math.MaxInt
	}
	return max(limit-c.Failures, 1)
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
