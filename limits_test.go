package apppass

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestApplyLimits(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p := &Password{Created: now}
	req := AddRequest{Expires: ptr("2026-01-02T12:00:00.5+01:00"), IdleExpiry: ptr("720h"),
		AllowedIPs: []string{"192.0.2.9/24", "2001:db8::1", "::ffff:198.51.100.7", "::ffff:203.0.113.0/120"}}
	if err := req.applyLimits(p, now); err != nil {
		t.Fatal(err)
	}
	if !p.Expires.Equal(time.Date(2026, 1, 2, 11, 0, 0, 5e8, time.UTC)) || p.IdleExpiry != 720*time.Hour {
		t.Fatalf("expires %v idle %v", p.Expires, p.IdleExpiry)
	}
	l := limitsOf(p)
	if got := strings.Join(l.AllowedIPs, " "); got != "192.0.2.0/24 2001:db8::1/128 198.51.100.7/32 203.0.113.0/24" {
		t.Fatalf("allowedIPs %s", got)
	}
	if *l.IdleExpiry != "720h0m0s" {
		t.Fatalf("idleExpiry %s", *l.IdleExpiry)
	}
	for name, bad := range map[string]AddRequest{
		"expires now":       {Expires: ptr(now.Format(time.RFC3339))},
		"expires past":      {Expires: ptr("2025-12-31T00:00:00Z")},
		"expires no zone":   {Expires: ptr("2027-01-01T00:00:00")},
		"idle zero":         {IdleExpiry: ptr("0s")},
		"idle negative":     {IdleExpiry: ptr("-1h")},
		"idle no unit":      {IdleExpiry: ptr("720")},
		"cidr bad":          {AllowedIPs: []string{"192.0.2.0/33"}},
		"cidr host name":    {AllowedIPs: []string{"example.com"}},
		"too many prefixes": {AllowedIPs: make([]string, 65)},
	} {
		err := bad.applyLimits(&Password{}, now)
		if KindOf(err) != KindInvalid {
			t.Errorf("%s: error %v, want invalid", name, err)
		}
	}
}

func TestAllows(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr("192.0.2.5")
	p := Password{Created: now.Add(-2 * time.Hour)}
	if !p.allows(netip.Addr{}, now) {
		t.Fatal("a password without limits refused")
	}
	p.Expires = ptr(now)
	if p.allows(ip, now) || !p.allows(ip, now.Add(-time.Millisecond)) {
		t.Fatal("expiry not applied at its instant")
	}
	p = Password{Created: now.Add(-2 * time.Hour), IdleExpiry: time.Hour}
	if p.allows(ip, now) {
		t.Fatal("idle password allowed")
	}
	p.LastLogin = &LastLogin{Time: now.Add(-59 * time.Minute)}
	if !p.allows(ip, now) {
		t.Fatal("recently used password refused as idle")
	}
	p = Password{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	if !p.allows(ip, now) || p.allows(netip.MustParseAddr("192.0.3.5"), now) || p.allows(netip.Addr{}, now) {
		t.Fatal("allowedIPs not applied")
	}
}

func TestThrottleBlock(t *testing.T) {
	p := ThrottlePolicy{PairLimit: 3, Window: time.Minute, MaxBlock: 10 * time.Second}
	now := time.Unix(1000, 0)
	at := func(failures int, ago time.Duration) time.Duration {
		return p.block(FailureCount{Failures: failures, WindowStart: now.Add(-ago), LastFailure: now.Add(-ago)}, 3, now)
	}
	if at(2, 0) != 0 {
		t.Fatal("blocked below the limit")
	}
	if at(3, 0) != time.Second || at(4, 0) != 2*time.Second || at(5, 0) != 4*time.Second {
		t.Fatalf("back-off %v %v %v, want 1s 2s 4s", at(3, 0), at(4, 0), at(5, 0))
	}
	if at(10, 0) != 10*time.Second || at(200, 0) != 10*time.Second {
		t.Fatal("back-off not capped at MaxBlock")
	}
	if at(5, 3*time.Second) != time.Second || at(5, 5*time.Second) != 0 {
		t.Fatal("block does not run out")
	}
	if p.block(FailureCount{Failures: 100, LastFailure: now}, 0, now) != 0 {
		t.Fatal("a zero limit blocks")
	}
}

func TestAuthCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewAuthCache(time.Minute)
	p := Password{UUID: "u1", Digest: "d1"}
	c.add(p, now, c.generation())
	if _, ok := c.get("d1", now); ok {
		t.Fatal("an untrusted cache answered")
	}
	c.SetTrusted(true)
	c.add(p, now, c.generation())
	if _, ok := c.get("d1", now.Add(59*time.Second)); !ok {
		t.Fatal("entry missing within its ttl")
	}
	if _, ok := c.get("d1", now.Add(61*time.Second)); ok {
		t.Fatal("entry served after its ttl")
	}
	// Refreshing a login keeps the original expiry.
	p.LastLogin = &LastLogin{IP: "192.0.2.1"}
	c.update(p)
	if got, ok := c.get("d1", now); !ok || got.LastLogin == nil {
		t.Fatal("update lost")
	}
	if _, ok := c.get("d1", now.Add(61*time.Second)); ok {
		t.Fatal("update extended the entry's life")
	}

	// A read that raced an eviction is not cached.
	gen := c.generation()
	c.EvictUUID("u1")
	if _, ok := c.get("d1", now); ok {
		t.Fatal("evicted entry served")
	}
	c.add(p, now, gen)
	if _, ok := c.get("d1", now); ok {
		t.Fatal("a read from before the eviction was cached")
	}
	c.update(p)
	if c.Len() != 0 {
		t.Fatal("update revived an evicted entry")
	}
	// Losing trust empties the cache.
	c.add(p, now, c.generation())
	c.SetTrusted(false)
	c.SetTrusted(true)
	if c.Len() != 0 {
		t.Fatal("entries survived a loss of trust")
	}
}
