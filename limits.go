package apppass

import (
	"fmt"
	"net/netip"
	"time"
)

// AddRequest is what a caller asks of Add. The limits are optional.
type AddRequest struct {
	AppScope string
	AppName  string
	// Expires is an RFC 3339 time after which the password is revoked.
	Expires *string
	// IdleExpiry is a duration ("720h"): the password is revoked when
	// unused for that long.
	IdleExpiry *string
	// AllowedIPs are CIDR prefixes (or single addresses) logins must come from.
	AllowedIPs []string
}

// Limits is how a password's limits are shown by add and list.
type Limits struct {
	Expires    *time.Time `json:"expires"`
	IdleExpiry *string    `json:"idleExpiry"`
	AllowedIPs []string   `json:"allowedIPs"`
}

const (
	minIdleExpiry = time.Second
	maxAllowedIPs = 64
)

// applyLimits validates the request's limits and sets them on p.
func (r AddRequest) applyLimits(p *Password, now time.Time) error {
	if r.Expires != nil {
		t, err := time.Parse(time.RFC3339Nano, *r.Expires)
		if err != nil {
			return Invalid("expires", "must be an RFC 3339 time such as 2030-01-31T12:00:00Z")
		}
		if !t.After(now) {
			return Invalid("expires", "must be in the future")
		}
		t = t.UTC().Truncate(time.Millisecond)
		p.Expires = &t
	}
	if r.IdleExpiry != nil {
		d, err := time.ParseDuration(*r.IdleExpiry)
		if err != nil {
			return Invalid("idleExpiry", "must be a duration such as 720h or 90m")
		}
		if d < minIdleExpiry {
			return Invalid("idleExpiry", fmt.Sprintf("must be at least %s", minIdleExpiry))
		}
		p.IdleExpiry = d
	}
	if len(r.AllowedIPs) > maxAllowedIPs {
		return Invalid("allowedIPs", fmt.Sprintf("must list at most %d prefixes", maxAllowedIPs))
	}
	for i, s := range r.AllowedIPs {
		prefix, err := parsePrefix(s)
		if err != nil {
			return Invalid("allowedIPs", fmt.Sprintf("entry %d (%q) is not a CIDR prefix such as 192.0.2.0/24 or an IP address", i+1, s))
		}
		p.AllowedIPs = append(p.AllowedIPs, prefix)
	}
	return nil
}

// parsePrefix reads a CIDR prefix or a single address, normalised.
func parsePrefix(s string) (netip.Prefix, error) {
	if prefix, err := netip.ParsePrefix(s); err == nil {
		addr, bits := prefix.Addr(), prefix.Bits()
		if addr.Is4In6() && bits >= 96 {
			addr, bits = addr.Unmap(), bits-96
		}
		return netip.PrefixFrom(addr, bits).Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

func limitsOf(p *Password) Limits {
	l := Limits{Expires: p.Expires}
	if p.IdleExpiry > 0 {
		s := p.IdleExpiry.String()
		l.IdleExpiry = &s
	}
	if len(p.AllowedIPs) > 0 {
		for _, prefix := range p.AllowedIPs {
			l.AllowedIPs = append(l.AllowedIPs, prefix.String())
		}
	}
	return l
}

// allows reports whether a login from ip may use p.
func (p *Password) allows(ip netip.Addr, now time.Time) bool {
	if p.Expires != nil && !now.Before(*p.Expires) {
		return false
	}
	if p.IdleExpiry > 0 && !now.Before(p.lastUse().Add(p.IdleExpiry)) {
		return false
	}
	if len(p.AllowedIPs) == 0 {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	for _, prefix := range p.AllowedIPs {
		if prefix.Contains(ip) {
			return true
		}
	}
	return false
}
