package apppass

import (
	"net/netip"
	"time"
)

// Password is a stored app password. It holds only the digest of the secret.
type Password struct {
	UUID     string
	Owner    User
	AppScope string
	Name     string
	Created  time.Time
	Digest   string
	KeyID    string
	// Limits chosen at add; zero values mean none.
	Expires    *time.Time
	IdleExpiry time.Duration
	AllowedIPs []netip.Prefix
	// LastLogin is the most recent recorded use (writes are throttled).
	LastLogin *LastLogin
	// KnownIPs are the client addresses it has been used from, for the
	// new-IP notice.
	KnownIPs []string
}

// LastLogin records the most recent successful use of an app password.
type LastLogin struct {
	Time      time.Time `json:"time"`
	IP        string    `json:"ip"`
	Device    string    `json:"device"`
	UserAgent string    `json:"userAgent"`
}

// idleDeadline is when an idle-expiring password is revoked if unused.
func (p *Password) idleDeadline(lastUse time.Time) *time.Time {
	if p.IdleExpiry <= 0 {
		return nil
	}
	t := lastUse.Add(p.IdleExpiry)
	return &t
}

// lastUse is when the password was last used, or created if never.
func (p *Password) lastUse() time.Time {
	if p.LastLogin != nil {
		return p.LastLogin.Time
	}
	return p.Created
}
