package apppass_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
)

// throttled is a service on a real store with the cache off, so every
// login meets the throttle, and one password for ann.
func throttled(t *testing.T) (svc *apppass.Service, store apppass.Store, password string) {
	t.Helper()
	store = testenv.Store(t)
	svc = newService(t, store)
	svc.Cache = nil
	c, err := svc.Add(context.Background(), annUser, apppass.AddRequest{AppScope: "mail", AppName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, c.Password
}

var annUser = apppass.User{ContextID: 1, UserID: 2, Login: "ann@example.com"}

func login(svc *apppass.Service, loginName, password, ip string) error {
	_, err := svc.Authenticate(context.Background(), apppass.LoginAttempt{Login: loginName, Password: password, Protocol: "imap", IP: ip})
	return err
}

const wrong = "abcd-efgh-ijkl-mnop"

// TestThrottleIPv6Prefix: failures from many addresses of one IPv6 /64
// are one address's failures; another /64 is another address.
func TestThrottleIPv6Prefix(t *testing.T) {
	svc, _, password := throttled(t)
	for i := range 60 {
		// Other logins each time: only the per-IP tally adds up.
		_ = login(svc, fmt.Sprintf("u%d@example.com", i), wrong, fmt.Sprintf("2001:db8:1:2::%x", i+1))
	}
	if err := login(svc, annUser.Login, password, "2001:db8:1:2:aaaa::1"); apppass.KindOf(err) != apppass.KindLimit {
		t.Fatalf("a login from the guessed /64 = %v, want throttled", err)
	}
	if err := login(svc, annUser.Login, password, "2001:db8:1:3::1"); err != nil {
		t.Fatalf("a login from the next /64 = %v, want accepted", err)
	}
	if err := login(svc, annUser.Login, password, "192.0.2.1"); err != nil {
		t.Fatalf("a login over IPv4 = %v, want accepted", err)
	}
}

// TestThrottleConcurrentGuesses: guesses sent all at once do not get past
// the limit by more than a few, and honest logins sent at once all pass.
func TestThrottleConcurrentGuesses(t *testing.T) {
	svc, store, password := throttled(t)
	const n = 40
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { _ = login(svc, annUser.Login, wrong, "198.51.100.9") })
	}
	wg.Wait()
	tallies, err := store.Failures(context.Background(), []string{"pair:" + apppass.LoginKey(annUser.Login) + "|198.51.100.9"})
	if err != nil {
		t.Fatal(err)
	}
	limit := apppass.DefaultThrottlePolicy.PairLimit
	if got := tallies["pair:"+apppass.LoginKey(annUser.Login)+"|198.51.100.9"].Failures; got > limit+3 || got < limit {
		t.Fatalf("%d guesses at once counted %d failures, want %d to %d: they overshot the limit", n, got, limit, limit+3)
	}

	// Honest logins at once (a mail client opening its connections) from
	// an address nobody guessed from: all accepted.
	errs := make([]error, 12)
	for i := range errs {
		wg.Go(func() { errs[i] = login(svc, annUser.Login, password, "203.0.113.5") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("honest login %d of %d at once: %v", i, len(errs), err)
		}
	}
}

// TestThrottleNoLockout: guesses lock out the guesser's address, never
// the owner's others, and a gateway that sends no address is its own.
func TestThrottleNoLockout(t *testing.T) {
	svc, _, password := throttled(t)
	for range 60 {
		_ = login(svc, annUser.Login, wrong, "198.51.100.9")
	}
	if err := login(svc, annUser.Login, password, "198.51.100.9"); apppass.KindOf(err) != apppass.KindLimit {
		t.Fatalf("the right password from the guessing address = %v, want throttled", err)
	}
	if err := login(svc, annUser.Login, password, "203.0.113.5"); err != nil {
		t.Fatalf("the owner from another address = %v, want accepted", err)
	}
	if err := login(svc, annUser.Login, password, ""); err != nil {
		t.Fatalf("the owner through a gateway that sends no address = %v, want accepted", err)
	}
	// Guesses through a gateway that sends no address throttle that
	// gateway's logins of ann, not ann's logins from known addresses.
	for range 20 {
		_ = login(svc, annUser.Login, wrong, "")
	}
	if err := login(svc, annUser.Login, password, ""); apppass.KindOf(err) != apppass.KindLimit {
		t.Fatalf("the right password without an address after guesses without one = %v, want throttled", err)
	}
	if err := login(svc, annUser.Login, password, "203.0.113.5"); err != nil {
		t.Fatalf("the owner from an address after guesses without one = %v, want accepted", err)
	}
}

// TestLoginBounds: a login or password over 256 bytes is refused before
// anything is looked up; a long device or user agent is cut, not refused.
func TestLoginBounds(t *testing.T) {
	svc, store, password := throttled(t)
	ctx := context.Background()
	for _, a := range []apppass.LoginAttempt{
		{Login: strings.Repeat("a", 257), Password: password, Protocol: "imap"},
		{Login: annUser.Login, Password: strings.Repeat("p", 257), Protocol: "imap"},
	} {
		if _, err := svc.Authenticate(ctx, a); apppass.KindOf(err) != apppass.KindInvalid {
			t.Errorf("login %d bytes, password %d bytes: %v, want invalid", len(a.Login), len(a.Password), err)
		}
	}
	if _, err := svc.Authenticate(ctx, apppass.LoginAttempt{Login: annUser.Login, Password: password, Protocol: "imap",
		IP: "192.0.2.1", Device: strings.Repeat("d", 300), UserAgent: strings.Repeat("é", 400)}); err != nil {
		t.Fatal(err)
	}
	l, err := store.List(ctx, annUser)
	if err != nil || len(l) != 1 || l[0].LastLogin == nil {
		t.Fatalf("list: %v %v", l, err)
	}
	if ll := l[0].LastLogin; len(ll.Device) != 256 || len(ll.UserAgent) > 512 || !strings.HasPrefix(ll.UserAgent, "é") || strings.ContainsRune(ll.UserAgent, '\uFFFD') {
		t.Errorf("stored device %d bytes, user agent %d bytes (%q…)", len(ll.Device), len(ll.UserAgent), ll.UserAgent[:4])
	}
}
