package apppass

import (
	"fmt"
	"slices"
	"time"
)

// ReauthPolicy is what a user's sign-in must show before add: an app
// password is a long-lived credential, so a deployment may ask for a
// recent sign-in (as GitHub's "sudo mode" does) or a second factor.
type ReauthPolicy struct {
	// MaxAge, if set: the token's auth_time may be at most this old.
	MaxAge time.Duration
	// AMR, if set: the token's amr must hold it (e.g. "mfa").
	AMR string
}

// CheckReauth refuses a user caller whose sign-in does not meet the
// policy, with an error that says what to ask the issuer for (a front end
// sends the user through it again with max_age, or acr_values for a
// second factor). Service keys are not asked.
func (s *Service) CheckReauth(c Caller) error {
	p := s.Reauth
	if c.Role != RoleUser || p == (ReauthPolicy{}) {
		return nil
	}
	if p.MaxAge > 0 {
		if c.AuthTime.IsZero() {
			return &Error{Kind: KindForbidden, Reauth: &p, Message: "sign in again: this token does not say when you signed in (auth_time)"}
		}
		if age := s.now().Sub(c.AuthTime); age > p.MaxAge {
			return &Error{Kind: KindForbidden, Reauth: &p,
				Message: fmt.Sprintf("sign in again: adding a password needs a sign-in of the last %s", p.MaxAge)}
		}
	}
	if p.AMR != "" && !slices.Contains(c.AMR, p.AMR) {
		return &Error{Kind: KindForbidden, Reauth: &p, Message: fmt.Sprintf("sign in again with %s: adding a password needs it", p.AMR)}
	}
	return nil
}
