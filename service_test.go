package apppass_test

// Service tests on a real store (the embedded SQLite store; FerretDB
// where the store must be stopped under the service).

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage/ferretdb"
)

func newService(t *testing.T, store apppass.Store) *apppass.Service {
	t.Helper()
	cat, _ := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	pepper := make([]byte, 32)
	_, _ = rand.Read(pepper)
	dig, _ := apppass.NewDigester(pepper)
	cache := apppass.NewAuthCache(time.Minute)
	cache.SetTrusted(true)
	return &apppass.Service{Store: store, Apps: cat, Digester: dig, MaxPerUser: 10, Cache: cache,
		Throttle: &apppass.Throttle{Store: store, Policy: apppass.DefaultThrottlePolicy}}
}

// TestCachedAuthenticateNeedsNoStore shows the cache at work: with the
// store stopped, a password that just logged in still does, while an
// unknown one gets "unavailable" — so the first cost no storage round trip.
func TestCachedAuthenticateNeedsNoStore(t *testing.T) {
	e, err := ferretdb.Start(t.TempDir(), testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	svc := newService(t, testenv.MongoStoreAt(t, e.URI, testenv.NewDatabaseName()))
	ctx := context.Background()
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "ann@example.com"}
	c, err := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "mail", AppName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	attempt := apppass.LoginAttempt{Login: "ann@example.com", Password: c.Password, Protocol: "imap", IP: "192.0.2.1"}
	if _, err := svc.Authenticate(ctx, attempt); err != nil {
		t.Fatal(err)
	}
	e.Stop()
	if got, err := svc.Authenticate(ctx, attempt); err != nil || got.UUID != c.UUID {
		t.Fatalf("cached authenticate with the store down: %v, %v", got, err)
	}
	// The cache still applies every rule: protocol and login.
	wrongProto := attempt
	wrongProto.Protocol = "caldav"
	wrongLogin := attempt
	wrongLogin.Login = "bob@example.com"
	for _, a := range []apppass.LoginAttempt{wrongProto, wrongLogin} {
		if _, err := svc.Authenticate(ctx, a); apppass.KindOf(err) != apppass.KindRejected && apppass.KindOf(err) != apppass.KindUnavailable {
			t.Fatalf("cached password misused: %v", err)
		}
	}
	unknown := attempt
	unknown.Password = "abcd-efgh-ijkl-mnop"
	if _, err := svc.Authenticate(ctx, unknown); apppass.KindOf(err) != apppass.KindUnavailable {
		t.Fatalf("uncached authenticate with the store down: %v, want unavailable", err)
	}
}

func TestRemoveEvictsAtOnce(t *testing.T) {
	svc := newService(t, testenv.Store(t))
	ctx := context.Background()
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "ann@example.com"}
	for range 10 {
		c, err := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "caldav", AppName: "cal"})
		if err != nil {
			t.Fatal(err)
		}
		attempt := apppass.LoginAttempt{Login: owner.Login, Password: c.Password, Protocol: "caldav"}
		for range 2 {
			if _, err := svc.Authenticate(ctx, attempt); err != nil {
				t.Fatal(err)
			}
		}
		if err := svc.Remove(ctx, owner, c.UUID, apppass.ReasonUser); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, attempt); apppass.KindOf(err) != apppass.KindRejected {
			t.Fatalf("authenticate after remove: %v", err)
		}
	}
	if svc.Cache.Len() != 0 {
		t.Fatalf("%d cache entries left", svc.Cache.Len())
	}
}

func TestSweepExpired(t *testing.T) {
	svc := newService(t, testenv.Store(t))
	now := time.Now().UTC()
	svc.Now = func() time.Time { return now }
	ctx := context.Background()
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "ann@example.com"}
	soon := now.Add(time.Minute).Format(time.RFC3339Nano)
	a, _ := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "mail", AppName: "expires", Expires: &soon})
	idle := "30m"
	b, _ := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "mail", AppName: "idle", IdleExpiry: &idle})
	c, _ := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "mail", AppName: "plain"})
	if n, err := svc.SweepExpired(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before anything expired: %d, %v", n, err)
	}
	// 20 minutes on, b is used, which moves its idle deadline.
	now = now.Add(20 * time.Minute)
	if _, err := svc.Authenticate(ctx, apppass.LoginAttempt{Login: owner.Login, Password: b.Password, Protocol: "imap"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(20 * time.Minute) // a has expired; b was used 20 minutes ago
	if n, err := svc.SweepExpired(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want a revoked", n, err)
	}
	now = now.Add(15 * time.Minute) // b idle for 35 minutes
	if n, err := svc.SweepExpired(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want b revoked", n, err)
	}
	list, _ := svc.List(ctx, owner)
	if len(list) != 1 || list[0].UUID != c.UUID {
		t.Fatalf("left after sweeping: %+v (a %s, b %s)", list, a.UUID, b.UUID)
	}
}
