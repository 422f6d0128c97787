package apppass_test

import (
	"context"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
)

// TestLastLoginWriter: a login that only moves lastLogin is written in the
// background; a first use, which queues an event, is stored before
// authenticate answers; a full queue drops updates rather than grow.
func TestLastLoginWriter(t *testing.T) {
	store := testenv.Store(t)
	svc := newService(t, store)
	svc.Cache = nil // every login reaches the store
	now := time.Now().UTC().Truncate(time.Millisecond)
	svc.Now = func() time.Time { return now }
	svc.LastLogins = apppass.NewLastLoginWriter(store, 1)
	ctx := context.Background()
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "ann@example.com"}
	c, err := svc.Add(ctx, owner, apppass.AddRequest{AppScope: "mail", AppName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	login := func(ip string) {
		t.Helper()
		if _, err := svc.Authenticate(ctx, apppass.LoginAttempt{Login: owner.Login, Password: c.Password, Protocol: "imap", IP: ip}); err != nil {
			t.Fatal(err)
		}
	}
	lastLogin := func() *apppass.LastLogin {
		t.Helper()
		l, err := svc.List(ctx, owner)
		if err != nil || len(l) != 1 {
			t.Fatalf("list: %v %v", l, err)
		}
		return l[0].LastLogin
	}

	// The writer is not running: a first use must not depend on it.
	login("192.0.2.1")
	if l := lastLogin(); l == nil || !l.Time.Equal(now) {
		t.Fatalf("lastLogin after the first use = %+v, want it stored at once", l)
	}
	// Two minutes on, from the same address: no event, so queued...
	now = now.Add(2 * time.Minute)
	login("192.0.2.1")
	if svc.LastLogins.Waiting() != 1 {
		t.Fatalf("%d updates wait, want 1", svc.LastLogins.Waiting())
	}
	// ...and one more is dropped: the queue holds one.
	now = now.Add(2 * time.Minute)
	login("192.0.2.1")
	if svc.LastLogins.Waiting() != 1 {
		t.Fatalf("%d updates wait after a drop, want 1", svc.LastLogins.Waiting())
	}
	// A new address queues an event: stored before the answer.
	now = now.Add(time.Second)
	login("198.51.100.7")
	if l := lastLogin(); l == nil || l.IP != "198.51.100.7" {
		t.Fatalf("lastLogin after a new IP = %+v, want it stored at once", l)
	}

	// Run writes what waits; stopping drains the rest.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.LastLogins.Run(runCtx, 5*time.Second, testenv.Quiet()); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for svc.LastLogins.Waiting() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	now = now.Add(2 * time.Minute)
	stop()
	<-done
	login("198.51.100.7") // queued after the writer stopped: waits
	if svc.LastLogins.Waiting() != 1 {
		t.Fatalf("%d updates wait after the writer stopped, want 1", svc.LastLogins.Waiting())
	}
	// The update queued before the new IP, written after it, moved
	// nothing back; and a plain update queues no event.
	if l := lastLogin(); l == nil || l.IP != "198.51.100.7" {
		t.Fatalf("lastLogin after the late write = %+v, want the new IP's login", l)
	}
	if n, err := store.PendingCount(ctx); err != nil || n != 3 {
		t.Fatalf("PendingCount = %d, %v; want created, first use and new IP", n, err)
	}
}
