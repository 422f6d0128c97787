// Package storetest is the conformance suite every storage backend must
// pass, in the manner of dex's storage/conformance: a backend's own test
// calls Run with a constructor of fresh, empty stores.
//
// The suite drives a backend only through apppass.Store, so it states the
// contract the domain's ports (ports.go) document, and it imports nothing
// but the domain. Its cross-handle cases open a second store on the same
// database, as a second apppassd replica would, and race the two.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
)

// Backend is what a storage adapter provides.
type Backend = apppass.Store

// Harness tells the suite how to open a backend.
type Harness struct {
	// New returns a fresh, empty store, and a function that opens another
	// store on the same database (as another replica would). Both are
	// closed by the caller's cleanup.
	New func(t *testing.T) (s Backend, another func(t *testing.T) Backend)
	// NotIsolated, when set, says why this backend cannot keep its rules
	// between two stores on one database; the cross-handle cases then skip,
	// saying so.
	NotIsolated string
}

// opTimeout bounds each call, so a hung backend fails the test instead of
// hanging it. It is generous on purpose: it is not a speed assertion.
const opTimeout = 30 * time.Second

type testCase struct {
	name string
	run  func(t *testing.T, s Backend)
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	tests := []testCase{
		{"InsertList", testInsertList},
		{"OwnersIsolated", testOwnersIsolated},
		{"ListContext", testListContext},
		{"Limit", testLimit},
		{"LimitConcurrent", testLimitConcurrent},
		{"Revoke", testRevoke},
		{"RevokeNotFound", testRevokeNotFound},
		{"RevokeEventError", testRevokeEventError},
		{"RevokeConcurrent", testRevokeConcurrent},
		{"FindByDigest", testFindByDigest},
		{"RecordLogin", testRecordLogin},
		{"RecordLoginConcurrent", testRecordLoginConcurrent},
		{"Expired", testExpired},
		{"Forgotten", testForgotten},
		{"ThrottleStore", testThrottleStore},
		{"Outbox", testOutbox},
		{"PublishOrder", testPublishOrder},
		{"OutboxLimit", testOutboxLimit},
		{"PublishedKept", testPublishedKept},
		{"OutboxClaim", testOutboxClaim},
		{"OutboxClaimTakeover", testOutboxClaimTakeover},
		{"OutboxClaimConcurrent", testOutboxClaimConcurrent},
		{"ClaimWithTheWrite", testClaimWithTheWrite},
		{"WebhookQueue", testWebhookQueue},
		{"WebhookClaimConcurrent", testWebhookClaimConcurrent},
		{"WebhookEndpoints", testWebhookEndpoints},
		{"ReplayIDs", testReplayIDs},
		{"DigestKey", testDigestKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := h.New(t)
			tc.run(t, s)
		})
	}
	t.Run("Transfer", func(t *testing.T) {
		src, _ := h.New(t)
		dst, _ := h.New(t)
		testTransfer(t, src, dst)
	})
	for _, tc := range crossHandleCases {
		t.Run("CrossHandle/"+tc.name, func(t *testing.T) {
			if tc.races && h.NotIsolated != "" {
				t.Skip("this backend cannot isolate two stores on one database: " + h.NotIsolated)
			}
			a, another := h.New(t)
			tc.run(t, a, another(t))
		})
	}
}

// inserted is the error of an Insert.
func inserted(_ apppass.PendingEvents, err error) error { return err }

// events are the pending events a Revoke returned.
func events(p apppass.PendingEvents, err error) ([]apppass.Event, error) { return p.Events, err }

// ctx returns a context bounded by opTimeout and cancelled with the test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID returns a random version 4 UUID in its canonical lowercase form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// now is a timestamp as a backend keeps it: UTC, whole milliseconds.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// newUser returns a user no other test uses.
func newUser() apppass.User {
	var b [4]byte
	_, _ = rand.Read(b[:])
	cid := int64(b[0])<<8 | int64(b[1]) + 1
	uid := int64(b[2])<<8 | int64(b[3]) + 1
	return apppass.User{ContextID: cid, UserID: uid, Login: fmt.Sprintf("User-%s@Example.COM", randomHex(4))}
}

// newPassword builds a password for owner with a random digest.
func newPassword(owner apppass.User, appScope, name string, created time.Time) *apppass.Password {
	return &apppass.Password{
		UUID: newUUID(), Owner: owner, AppScope: appScope, Name: name, Created: created,
		Digest: "digest-" + randomHex(16), KeyID: "key1",
	}
}

// event builds an event about p, the way the service does.
func event(typ string, ts time.Time, p *apppass.Password, reason string) apppass.Event {
	return apppass.Event{
		ID: randomHex(12), Type: typ, Timestamp: ts,
		Data: apppass.EventData{UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID,
			Login: p.Owner.Login, AppScope: p.AppScope, Name: p.Name, Reason: reason},
	}
}

func createdEvent(p *apppass.Password) apppass.Event {
	return event(apppass.EventCreated, p.Created, p, "")
}

// revokedBy returns a Revoke callback that builds a revoked event and
// keeps it, and the password it was handed, for the test to check.
func revokedBy(reason string, ev *apppass.Event, seen *apppass.Password) func(*apppass.Password) (apppass.Event, error) {
	return func(p *apppass.Password) (apppass.Event, error) {
		*seen = *p
		*ev = event(apppass.EventRevoked, now(), p, reason)
		return *ev, nil
	}
}

// insert inserts p with its created event and fails the test on error.
func insert(t *testing.T, s Backend, p *apppass.Password, limit int) apppass.Event {
	t.Helper()
	ev := createdEvent(p)
	if err := inserted(s.Insert(ctx(t), p, ev, limit, nil)); err != nil {
		t.Fatalf("Insert(%s): %v", p.UUID, err)
	}
	return ev
}

func revoke(t *testing.T, s Backend, p *apppass.Password) ([]apppass.Event, apppass.Event) {
	t.Helper()
	var ev apppass.Event
	var seen apppass.Password
	pending, err := events(s.Revoke(ctx(t), p.Owner, p.UUID, revokedBy(apppass.ReasonUser, &ev, &seen), nil))
	if err != nil {
		t.Fatalf("Revoke(%s): %v", p.UUID, err)
	}
	return pending, ev
}

func list(t *testing.T, s Backend, owner apppass.User) []apppass.Password {
	t.Helper()
	ps, err := s.List(ctx(t), owner)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return ps
}

func uuids(ps []apppass.Password) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.UUID
	}
	return out
}

func pendingCount(t *testing.T, s Backend) int64 {
	t.Helper()
	n, err := s.PendingCount(ctx(t))
	if err != nil {
		t.Fatalf("PendingCount: %v", err)
	}
	return n
}

// pending returns Pending as a map from password UUID to its events.
func pending(t *testing.T, s Backend) map[string][]apppass.Event {
	t.Helper()
	ps, err := s.Pending(ctx(t), 1000, "")
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	out := map[string][]apppass.Event{}
	for _, p := range ps {
		if _, dup := out[p.PasswordUUID]; dup {
			t.Errorf("Pending lists password %s twice", p.PasswordUUID)
		}
		out[p.PasswordUUID] = p.Events
	}
	return out
}

func markPublished(t *testing.T, s Backend, uuid string, ev apppass.Event) {
	t.Helper()
	if err := s.MarkPublished(ctx(t), uuid, "", []apppass.Event{ev}); err != nil {
		t.Fatalf("MarkPublished(%s, %s): %v", uuid, ev.Type, err)
	}
}

// sameEvent compares events field by field, times by instant.
func sameEvent(a, b apppass.Event) bool {
	return a.ID == b.ID && a.Type == b.Type && a.Timestamp.Equal(b.Timestamp) && a.Data == b.Data
}

func checkEvents(t *testing.T, what string, got []apppass.Event, want ...apppass.Event) {
	t.Helper()
	if !slices.EqualFunc(got, want, sameEvent) {
		t.Errorf("%s: got events\n%s\nwant\n%s", what, fmtEvents(got), fmtEvents(want))
	}
}

func fmtEvents(evs []apppass.Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("  %s %s %s %+v\n", e.ID, e.Type, e.Timestamp.Format(time.RFC3339Nano), e.Data)
	}
	return s
}

func checkKind(t *testing.T, what string, err error, want apppass.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want kind %d", what, want)
		return
	}
	if k := apppass.KindOf(err); k != want {
		t.Errorf("%s: error %v has kind %d, want %d", what, err, k, want)
	}
}

func testInsertList(t *testing.T, s Backend) {
	owner := newUser()
	base := now().Add(-time.Hour)
	// Inserted out of created order, so only a sort gives newest first.
	older := newPassword(owner, "mail", "Phone mail", base.Add(1*time.Second+123*time.Millisecond))
	newest := newPassword(owner, "caldav", "Tablet calendar ✓", base.Add(3*time.Second+456*time.Millisecond))
	oldest := newPassword(owner, "eas", "Car", base.Add(7*time.Millisecond))
	for _, p := range []*apppass.Password{older, newest, oldest} {
		insert(t, s, p, 10)
	}

	got := list(t, s, owner)
	want := []*apppass.Password{newest, older, oldest}
	if len(got) != len(want) {
		t.Fatalf("List returned %d passwords %v, want 3", len(got), uuids(got))
	}
	for i, w := range want {
		g := got[i]
		if g.UUID != w.UUID {
			t.Errorf("List[%d] is %s, want %s (newest first)", i, g.UUID, w.UUID)
			continue
		}
		if g.Owner != w.Owner {
			t.Errorf("List[%d].Owner = %+v, want %+v", i, g.Owner, w.Owner)
		}
		if g.AppScope != w.AppScope || g.Name != w.Name || g.KeyID != w.KeyID {
			t.Errorf("List[%d] = app %q name %q key %q, want %q %q %q", i, g.AppScope, g.Name, g.KeyID, w.AppScope, w.Name, w.KeyID)
		}
		if !g.Created.Equal(w.Created) {
			t.Errorf("List[%d].Created = %s, want %s", i, g.Created.Format(time.RFC3339Nano), w.Created.Format(time.RFC3339Nano))
		}
		if g.Digest != "" {
			t.Errorf("List[%d] returned the digest %q; List must never return it", i, g.Digest)
		}
		if g.LastLogin != nil {
			t.Errorf("List[%d].LastLogin = %+v for a password never used", i, g.LastLogin)
		}
	}
}

func testOwnersIsolated(t *testing.T, s Backend) {
	alice, bob := newUser(), newUser()
	// Same context, other user; and same user id in another context.
	carol := apppass.User{ContextID: alice.ContextID, UserID: alice.UserID + 1, Login: "carol"}
	dave := apppass.User{ContextID: alice.ContextID + 1, UserID: alice.UserID, Login: "dave"}
	p := newPassword(alice, "mail", "alice's", now())
	insert(t, s, p, 10)

	for _, other := range []apppass.User{bob, carol, dave} {
		if got := list(t, s, other); len(got) != 0 {
			t.Errorf("List(%+v) returned %v, another user's passwords", other, uuids(got))
		}
	}
	if got := list(t, s, alice); !slices.Equal(uuids(got), []string{p.UUID}) {
		t.Errorf("List(alice) = %v, want [%s]", uuids(got), p.UUID)
	}
}

// testListContext: every active password of a context, of all its users,
// none of another context, none revoked, at most limit.
func testListContext(t *testing.T, s Backend) {
	alice := newUser()
	bob := apppass.User{ContextID: alice.ContextID, UserID: alice.UserID + 1, Login: "bob"}
	carol := apppass.User{ContextID: alice.ContextID + 1, UserID: alice.UserID, Login: "carol"}
	var want []string
	for i, owner := range []apppass.User{alice, alice, bob} {
		p := newPassword(owner, "mail", fmt.Sprintf("p%d", i), now())
		insert(t, s, p, 10)
		want = append(want, p.UUID)
	}
	insert(t, s, newPassword(carol, "mail", "other context", now()), 10)
	gone := newPassword(bob, "mail", "revoked", now())
	insert(t, s, gone, 10)
	revoke(t, s, gone)

	got, err := s.ListContext(ctx(t), alice.ContextID, 10)
	if err != nil {
		t.Fatalf("ListContext: %v", err)
	}
	if !sameSet(uuids(got), want) {
		t.Fatalf("ListContext = %v, want %v (any order)", uuids(got), want)
	}
	for _, p := range got {
		if p.Owner.ContextID != alice.ContextID || (p.Owner.UserID != alice.UserID && p.Owner.UserID != bob.UserID) {
			t.Errorf("ListContext returned owner %+v", p.Owner)
		}
		if p.Digest != "" {
			t.Errorf("ListContext returned the digest of %s", p.UUID)
		}
	}
	if got, err := s.ListContext(ctx(t), alice.ContextID, 2); err != nil || len(got) != 2 {
		t.Fatalf("ListContext with limit 2 = %v, %v", uuids(got), err)
	}
	if got, err := s.ListContext(ctx(t), carol.ContextID+1, 10); err != nil || len(got) != 0 {
		t.Fatalf("ListContext of an empty context = %v, %v", uuids(got), err)
	}
}

func testLimit(t *testing.T, s Backend) {
	owner, other := newUser(), newUser()
	var ps []*apppass.Password
	for i := range 3 {
		p := newPassword(owner, "mail", fmt.Sprintf("p%d", i), now().Add(time.Duration(i)*time.Millisecond))
		insert(t, s, p, 3)
		ps = append(ps, p)
	}
	fourth := newPassword(owner, "mail", "fourth", now())
	err := inserted(s.Insert(ctx(t), fourth, createdEvent(fourth), 3, nil))
	checkKind(t, "4th insert with limit 3", err, apppass.KindLimit)
	if got := list(t, s, owner); len(got) != 3 {
		t.Errorf("List after the refused insert has %d passwords, want 3", len(got))
	}

	// The limit is per owner.
	insert(t, s, newPassword(other, "mail", "someone else's", now()), 3)

	// Revoking releases a slot, exactly one.
	revoke(t, s, ps[1])
	insert(t, s, fourth, 3)
	fifth := newPassword(owner, "mail", "fifth", now())
	err = inserted(s.Insert(ctx(t), fifth, createdEvent(fifth), 3, nil))
	checkKind(t, "insert after refilling the released slot", err, apppass.KindLimit)
	if got := list(t, s, owner); len(got) != 3 {
		t.Errorf("List has %d passwords, want 3", len(got))
	}
}

func testLimitConcurrent(t *testing.T, s Backend) {
	const tries, limit = 20, 5
	owner := newUser()
	c := ctx(t)
	errs := make([]error, tries)
	ps := make([]*apppass.Password, tries)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range tries {
		ps[i] = newPassword(owner, "mail", fmt.Sprintf("racer %d", i), now())
		wg.Go(func() {
			<-start
			errs[i] = inserted(s.Insert(c, ps[i], createdEvent(ps[i]), limit, nil))
		})
	}
	close(start)
	wg.Wait()

	var ok []string
	for i, err := range errs {
		switch {
		case err == nil:
			ok = append(ok, ps[i].UUID)
		case apppass.KindOf(err) != apppass.KindLimit:
			t.Errorf("insert %d: %v (kind %d), want success or KindLimit", i, err, apppass.KindOf(err))
		}
	}
	if len(ok) != limit {
		t.Errorf("%d of %d concurrent inserts succeeded, want exactly %d", len(ok), tries, limit)
	}
	got := list(t, s, owner)
	if len(got) != limit {
		t.Fatalf("List has %d passwords after the race, want %d", len(got), limit)
	}
	if listed := uuids(got); !sameSet(listed, ok) {
		t.Errorf("List %v is not the successful inserts %v", listed, ok)
	}

	// A revocation frees exactly one slot.
	revoke(t, s, &apppass.Password{UUID: got[0].UUID, Owner: owner})
	insert(t, s, newPassword(owner, "mail", "after revoke", now()), limit)
	extra := newPassword(owner, "mail", "one too many", now())
	checkKind(t, "insert beyond the limit again", inserted(s.Insert(ctx(t), extra, createdEvent(extra), limit, nil)), apppass.KindLimit)
	if got := list(t, s, owner); len(got) != limit {
		t.Errorf("List has %d passwords, want %d", len(got), limit)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func testRevoke(t *testing.T, s Backend) {
	owner := newUser()
	keep := newPassword(owner, "mail", "keep", now())
	gone := newPassword(owner, "drive", "gone", now().Add(time.Millisecond))
	insert(t, s, keep, 10)
	created := insert(t, s, gone, 10)

	var revoked apppass.Event
	var seen apppass.Password
	got, err := events(s.Revoke(ctx(t), owner, gone.UUID, revokedBy(apppass.ReasonAdmin, &revoked, &seen), nil))
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if seen.UUID != gone.UUID || seen.Owner != owner || seen.AppScope != gone.AppScope || seen.Name != gone.Name {
		t.Errorf("the event callback was handed %+v, want the password %+v", seen, *gone)
	}
	checkEvents(t, "Revoke with the created event unpublished", got, created, revoked)
	if l := list(t, s, owner); !slices.Equal(uuids(l), []string{keep.UUID}) {
		t.Errorf("List after Revoke = %v, want only [%s]", uuids(l), keep.UUID)
	}

	// With the created event published, only the revoked one is pending.
	keepCreated := pending(t, s)[keep.UUID]
	if len(keepCreated) != 1 {
		t.Fatalf("Pending for %s = %v, want its created event", keep.UUID, keepCreated)
	}
	markPublished(t, s, keep.UUID, keepCreated[0])
	got, revoked = revoke(t, s, keep)
	checkEvents(t, "Revoke with the created event published", got, revoked)
	if l := list(t, s, owner); len(l) != 0 {
		t.Errorf("List after revoking everything = %v, want none", uuids(l))
	}
}

func testRevokeNotFound(t *testing.T, s Backend) {
	owner, other := newUser(), newUser()
	p := newPassword(owner, "mail", "mine", now())
	insert(t, s, p, 10)
	theirs := newPassword(other, "mail", "theirs", now())
	insert(t, s, theirs, 10)
	revoked := newPassword(owner, "mail", "revoked", now())
	insert(t, s, revoked, 10)
	revoke(t, s, revoked)
	before := pendingCount(t, s)

	for _, tc := range []struct {
		what string
		uuid string
	}{
		{"someone else's password", theirs.UUID},
		{"an unknown password", newUUID()},
		{"an already revoked password", revoked.UUID},
	} {
		// A backend may build the event before it finds out; it must not store it.
		_, err := s.Revoke(ctx(t), owner, tc.uuid, func(p *apppass.Password) (apppass.Event, error) {
			return event(apppass.EventRevoked, now(), p, apppass.ReasonUser), nil
		}, &apppass.Claim{Owner: "relay", Lease: time.Minute})
		checkKind(t, "revoking "+tc.what, err, apppass.KindNotFound)
		if !errors.Is(err, apppass.ErrNotFound) {
			t.Errorf("revoking %s: error %v is not apppass.ErrNotFound", tc.what, err)
		}
	}
	if after := pendingCount(t, s); after != before {
		t.Errorf("PendingCount went from %d to %d after refused revocations", before, after)
	}
	if l := list(t, s, other); !slices.Equal(uuids(l), []string{theirs.UUID}) {
		t.Errorf("the other user's list is %v after an attempt to revoke it, want [%s]", uuids(l), theirs.UUID)
	}
	if l := list(t, s, owner); !slices.Equal(uuids(l), []string{p.UUID}) {
		t.Errorf("List = %v, want [%s]", uuids(l), p.UUID)
	}
}

func testRevokeEventError(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "mail", "mine", now())
	insert(t, s, p, 10)
	boom := errors.New("no randomness today")
	_, err := s.Revoke(ctx(t), owner, p.UUID, func(*apppass.Password) (apppass.Event, error) {
		return apppass.Event{}, boom
	}, nil)
	if !errors.Is(err, boom) {
		t.Errorf("Revoke returned %v, want the callback's error", err)
	}
	if l := list(t, s, owner); !slices.Equal(uuids(l), []string{p.UUID}) {
		t.Errorf("List = %v after a failed revocation, want the password still active", uuids(l))
	}
	if n := pendingCount(t, s); n != 1 {
		t.Errorf("PendingCount = %d after a failed revocation, want 1", n)
	}
}

func testFindByDigest(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "calcarddav", "Thunderbird", now())
	exp := now().Add(time.Hour)
	p.Expires, p.IdleExpiry = &exp, 90*time.Minute
	p.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	revoked := newPassword(owner, "mail", "Old phone", now())
	insert(t, s, p, 10)
	insert(t, s, revoked, 10)
	revoke(t, s, revoked)

	got, err := s.FindByDigest(ctx(t), p.Digest)
	if err != nil {
		t.Fatalf("FindByDigest: %v", err)
	}
	if got.UUID != p.UUID || got.Owner != p.Owner || got.AppScope != p.AppScope || got.Digest != p.Digest ||
		!got.Expires.Equal(exp) || got.IdleExpiry != p.IdleExpiry || !slices.Equal(got.AllowedIPs, p.AllowedIPs) || got.LastLogin != nil {
		t.Errorf("FindByDigest = %+v, want %+v", *got, *p)
	}
	for what, digest := range map[string]string{"unknown digest": "digest-" + randomHex(16), "revoked password": revoked.Digest} {
		got, err := s.FindByDigest(ctx(t), digest)
		checkKind(t, what, err, apppass.KindRejected)
		if got != nil {
			t.Errorf("%s: returned %+v", what, *got)
		}
	}
}

func testRecordLogin(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "mail", "Phone", now())
	p.IdleExpiry = time.Hour
	insert(t, s, p, 10)
	markPublished(t, s, p.UUID, pending(t, s)[p.UUID][0])

	first := apppass.LastLogin{Time: now(), IP: "192.0.2.7", Device: "iPhone", UserAgent: "Mail/1.0"}
	used := event(apppass.EventFirstUse, first.Time, p, "")
	used.Data.IP = first.IP
	deadline := first.Time.Add(time.Hour)
	queued, err := s.RecordLogin(ctx(t), p.UUID, first, &deadline, &used)
	if err != nil || !queued {
		t.Fatalf("RecordLogin(first use) = %v, %v; want queued", queued, err)
	}
	// The same first use recorded by a racing login: no second event.
	again := event(apppass.EventFirstUse, first.Time, p, "")
	if queued, err := s.RecordLogin(ctx(t), p.UUID, first, &deadline, &again); err != nil || queued {
		t.Fatalf("second first use = %v, %v; want not queued", queued, err)
	}
	checkEvents(t, "pending after first use", pending(t, s)[p.UUID], used)
	got, _ := s.FindByDigest(ctx(t), p.Digest)
	if got.LastLogin == nil || *got.LastLogin != first || !slices.Equal(got.KnownIPs, []string{first.IP}) {
		t.Fatalf("after first use: lastLogin %+v knownIPs %v", got.LastLogin, got.KnownIPs)
	}

	// A known IP queues nothing; a new one queues once.
	sameIP := event(apppass.EventNewIP, now(), p, "")
	if queued, _ := s.RecordLogin(ctx(t), p.UUID, first, nil, &sameIP); queued {
		t.Fatal("a new-IP event was queued for a known IP")
	}
	second := apppass.LastLogin{Time: now().Add(time.Minute), IP: "2001:db8::9", Device: "iPad", UserAgent: "Mail/2.0"}
	newIP := event(apppass.EventNewIP, second.Time, p, "")
	if queued, err := s.RecordLogin(ctx(t), p.UUID, second, nil, &newIP); err != nil || !queued {
		t.Fatalf("RecordLogin(new IP) = %v, %v", queued, err)
	}
	got, _ = s.FindByDigest(ctx(t), p.Digest)
	if *got.LastLogin != second || !sameSet(got.KnownIPs, []string{first.IP, second.IP}) {
		t.Fatalf("after new IP: lastLogin %+v knownIPs %v", got.LastLogin, got.KnownIPs)
	}
	if n := pendingCount(t, s); n != 2 {
		t.Fatalf("PendingCount = %d, want 2 (first use and new IP)", n)
	}

	// A plain login only moves lastLogin, and only forward (a login
	// written late moves nothing back); a revoked password is left alone.
	third := apppass.LastLogin{Time: now().Add(2 * time.Minute), IP: second.IP}
	if _, err := s.RecordLogin(ctx(t), p.UUID, third, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FindByDigest(ctx(t), p.Digest); *got.LastLogin != third {
		t.Fatalf("lastLogin %+v, want %+v", got.LastLogin, third)
	}
	late := apppass.LastLogin{Time: third.Time.Add(-30 * time.Second), IP: "192.0.2.99"}
	if _, err := s.RecordLogin(ctx(t), p.UUID, late, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FindByDigest(ctx(t), p.Digest); *got.LastLogin != third {
		t.Fatalf("a late, older login moved lastLogin to %+v, want %+v", got.LastLogin, third)
	}
	revoke(t, s, p)
	afterRevoke := apppass.LastLogin{Time: now().Add(3 * time.Minute), IP: "198.51.100.1"}
	lateEv := event(apppass.EventNewIP, afterRevoke.Time, p, "")
	if queued, err := s.RecordLogin(ctx(t), p.UUID, afterRevoke, nil, &lateEv); err != nil || queued {
		t.Fatalf("RecordLogin on a revoked password = %v, %v", queued, err)
	}
}

func testExpired(t *testing.T, s Backend) {
	owner := newUser()
	t0 := now()
	past, future := t0.Add(-time.Second), t0.Add(time.Hour)
	expired := newPassword(owner, "mail", "expired", t0)
	expired.Expires = &past
	notYet := newPassword(owner, "mail", "not yet", t0)
	notYet.Expires = &future
	idle := newPassword(owner, "mail", "idle", t0.Add(-2*time.Hour))
	idle.IdleExpiry = time.Hour
	used := newPassword(owner, "mail", "used", t0.Add(-2*time.Hour))
	used.IdleExpiry = time.Hour
	plain := newPassword(owner, "mail", "plain", t0)
	for _, p := range []*apppass.Password{expired, notYet, idle, used, plain} {
		insert(t, s, p, 10)
	}
	// A recent login moves the idle deadline of "used".
	deadline := t0.Add(time.Hour)
	if _, err := s.RecordLogin(ctx(t), used.UUID, apppass.LastLogin{Time: t0}, &deadline, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Expired(ctx(t), t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(uuids(got), []string{expired.UUID, idle.UUID}) {
		t.Fatalf("Expired = %v, want expired and idle %v", uuids(got), []string{expired.UUID, idle.UUID})
	}
	if limited, _ := s.Expired(ctx(t), t0, 1); len(limited) != 1 {
		t.Fatalf("Expired(limit 1) returned %d", len(limited))
	}
	revoke(t, s, expired)
	if got, _ := s.Expired(ctx(t), t0, 10); !slices.Equal(uuids(got), []string{idle.UUID}) {
		t.Fatalf("Expired after revoking one = %v", uuids(got))
	}
}

func testThrottleStore(t *testing.T, ts Backend) {
	key, other := "pair:"+randomHex(4), "ip:"+randomHex(4)
	t0 := now()
	for i := 1; i <= 3; i++ {
		c, err := ts.AddFailure(ctx(t), key, t0.Add(time.Duration(i)*time.Second), t0.Add(-time.Minute))
		if err != nil || c.Failures != i || !c.WindowStart.Equal(t0.Add(time.Second)) || !c.LastFailure.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("AddFailure #%d = %+v, %v", i, c, err)
		}
	}
	// A window that started after the tally did: a fresh tally.
	later := t0.Add(time.Hour)
	if c, err := ts.AddFailure(ctx(t), key, later, later.Add(-time.Minute)); err != nil || c.Failures != 1 || !c.WindowStart.Equal(later) {
		t.Fatalf("AddFailure after the window = %+v, %v", c, err)
	}
	if _, err := ts.AddFailure(ctx(t), other, t0, t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := ts.Failures(ctx(t), []string{key, other, "ip:none"})
	if err != nil || len(got) != 2 || got[key].Failures != 1 || got[other].Failures != 1 {
		t.Fatalf("Failures = %+v, %v", got, err)
	}
	if err := ts.ClearFailures(ctx(t), key); err != nil {
		t.Fatal(err)
	}
	if err := ts.PurgeFailures(ctx(t), t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := ts.Failures(ctx(t), []string{key, other}); len(got) != 0 {
		t.Fatalf("after clear and purge: %+v", got)
	}

	// Concurrent failures are all counted within a window.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { _, _ = ts.AddFailure(ctx(t), other, t0, t0.Add(-time.Minute)) })
	}
	wg.Wait()
	if got, _ := ts.Failures(ctx(t), []string{other}); got[other].Failures != 20 {
		t.Fatalf("20 concurrent failures counted as %d", got[other].Failures)
	}
}

func testOutbox(t *testing.T, s Backend) {
	if n := pendingCount(t, s); n != 0 {
		t.Fatalf("a fresh store has PendingCount %d", n)
	}
	if got := pending(t, s); len(got) != 0 {
		t.Fatalf("a fresh store has pending events: %v", got)
	}
	owner := newUser()
	a := newPassword(owner, "mail", "a", now())
	b := newPassword(owner, "mail", "b", now())
	c := newPassword(newUser(), "eas", "c", now())
	aCreated, bCreated, cCreated := insert(t, s, a, 10), insert(t, s, b, 10), insert(t, s, c, 10)
	_, aRevoked := revoke(t, s, a)

	got := pending(t, s)
	if len(got) != 3 {
		t.Errorf("Pending lists %d passwords, want 3", len(got))
	}
	checkEvents(t, "Pending for a (created, then revoked)", got[a.UUID], aCreated, aRevoked)
	checkEvents(t, "Pending for b", got[b.UUID], bCreated)
	checkEvents(t, "Pending for c", got[c.UUID], cCreated)
	if n := pendingCount(t, s); n != 4 {
		t.Errorf("PendingCount = %d, want 4", n)
	}

	// Publishing b's only event takes b out of the outbox but keeps it active.
	markPublished(t, s, b.UUID, bCreated)
	markPublished(t, s, b.UUID, bCreated) // a relay retry: harmless
	got = pending(t, s)
	if _, ok := got[b.UUID]; ok || len(got) != 2 {
		t.Errorf("Pending after publishing b = %v, want a and c only", keys(got))
	}
	if n := pendingCount(t, s); n != 3 {
		t.Errorf("PendingCount after publishing b (twice) = %d, want 3", n)
	}
	if l := list(t, s, owner); !slices.Equal(uuids(l), []string{b.UUID}) {
		t.Errorf("List after publishing b's created event = %v, want [%s]", uuids(l), b.UUID)
	}
	// The repeated mark must not have disturbed b's bookkeeping: its
	// revocation is pending like any other event.
	_, bRevoked := revoke(t, s, b)
	checkEvents(t, "Pending for b after its revocation", pending(t, s)[b.UUID], bRevoked)
	if n := pendingCount(t, s); n != 4 {
		t.Errorf("PendingCount after revoking b = %d, want 4", n)
	}
	markPublished(t, s, b.UUID, bRevoked)
	if n := pendingCount(t, s); n != 3 {
		t.Errorf("PendingCount after publishing b's revocation = %d, want 3", n)
	}

	// a: created, then revoked; after both, nothing is left of it.
	markPublished(t, s, a.UUID, aCreated)
	checkEvents(t, "Pending for a after publishing created", pending(t, s)[a.UUID], aRevoked)
	if n := pendingCount(t, s); n != 2 {
		t.Errorf("PendingCount = %d, want 2", n)
	}
	markPublished(t, s, a.UUID, aRevoked)
	markPublished(t, s, a.UUID, aRevoked) // the document is gone by now: still harmless
	markPublished(t, s, a.UUID, aCreated)
	if got := pending(t, s); len(got) != 1 || got[c.UUID] == nil {
		t.Errorf("Pending after publishing a = %v, want c only", keys(got))
	}
	if _, err := events(s.Revoke(ctx(t), owner, a.UUID, revokedBy("", new(apppass.Event), new(apppass.Password)), nil)); !errors.Is(err, apppass.ErrNotFound) {
		t.Errorf("Revoke of a published revoked password = %v, want ErrNotFound", err)
	}

	markPublished(t, s, c.UUID, cCreated)
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount after publishing everything = %d, want 0", n)
	}
	if got := pending(t, s); len(got) != 0 {
		t.Errorf("Pending after publishing everything = %v, want none", keys(got))
	}
	// Marking an event of a password that never existed is harmless too.
	ghost := newPassword(owner, "mail", "ghost", now())
	markPublished(t, s, ghost.UUID, createdEvent(ghost))
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount = %d, want 0", n)
	}
}

// testPublishOrder checks that pending events come created first, revoked
// last, whatever their timestamps say (clocks of two replicas may disagree)
// and however the backend happens to keep them.
func testPublishOrder(t *testing.T, s Backend) {
	owner := newUser()
	type pw struct {
		p                *apppass.Password
		created, revoked apppass.Event
	}
	var ps []pw
	for i := range 8 {
		p := newPassword(owner, "mail", fmt.Sprint(i), now())
		created := createdEvent(p)
		if i%2 == 0 {
			// A created event stamped after the revocation.
			created.Timestamp = now().Add(time.Hour)
		}
		if err := inserted(s.Insert(ctx(t), p, created, 10, nil)); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		ps = append(ps, pw{p: p, created: created})
	}
	for i := range ps {
		got, revoked := revoke(t, s, ps[i].p)
		ps[i].revoked = revoked
		checkEvents(t, "Revoke "+fmt.Sprint(i), got, ps[i].created, revoked)
	}
	got := pending(t, s)
	for i, x := range ps {
		checkEvents(t, "Pending "+fmt.Sprint(i), got[x.p.UUID], x.created, x.revoked)
	}
}

func testOutboxLimit(t *testing.T, s Backend) {
	owner := newUser()
	for i := range 5 {
		insert(t, s, newPassword(owner, "mail", fmt.Sprint(i), now()), 10)
	}
	got, err := s.Pending(ctx(t), 2, "")
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	if len(got) != 2 {
		t.Errorf("Pending(2) returned %d passwords, want 2", len(got))
	}
	if n := pendingCount(t, s); n != 5 {
		t.Errorf("PendingCount = %d, want 5", n)
	}
}

// purge runs PurgePublished for events marked before before.
func purge(t *testing.T, s Backend, before time.Time, limit int) int {
	t.Helper()
	n, err := s.PurgePublished(ctx(t), before, limit)
	if err != nil {
		t.Fatalf("PurgePublished: %v", err)
	}
	return n
}

// testPublishedKept: a published event is kept, out of the pending ones,
// until the purge; RequeuePublished makes the kept ones pending again, in
// publish order; the purge honours its limit and forgets a revoked
// password with its last event, not an active one.
func testPublishedKept(t *testing.T, s Backend) {
	owner := newUser()
	a, b := newPassword(owner, "mail", "a", now()), newPassword(owner, "mail", "b", now())
	aCreated, bCreated := insert(t, s, a, 10), insert(t, s, b, 10)
	_, aRevoked := revoke(t, s, a)
	if err := s.MarkPublished(ctx(t), a.UUID, "", []apppass.Event{aCreated, aRevoked}); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	markPublished(t, s, b.UUID, bCreated)
	if n := pendingCount(t, s); n != 0 {
		t.Fatalf("PendingCount after marking everything = %d, want 0", n)
	}
	if got := purge(t, s, time.Now().Add(-time.Minute), 100); got != 0 {
		t.Errorf("PurgePublished of events marked a minute ago deleted %d, want 0", got)
	}
	if n, err := s.CountPasswords(ctx(t)); err != nil || n != 2 {
		t.Errorf("CountPasswords before the purge = %d, %v; want 2", n, err)
	}

	if n, err := s.RequeuePublished(ctx(t)); err != nil || n != 3 {
		t.Fatalf("RequeuePublished = %d, %v; want 3", n, err)
	}
	got := pending(t, s)
	checkEvents(t, "Pending for a after the requeue", got[a.UUID], aCreated, aRevoked)
	checkEvents(t, "Pending for b after the requeue", got[b.UUID], bCreated)
	if n, err := s.RequeuePublished(ctx(t)); err != nil || n != 0 {
		t.Errorf("RequeuePublished again = %d, %v; want 0", n, err)
	}
	if got := purge(t, s, time.Now().Add(time.Minute), 100); got != 0 {
		t.Errorf("PurgePublished with nothing marked deleted %d, want 0", got)
	}

	if err := s.MarkPublished(ctx(t), a.UUID, "", []apppass.Event{aCreated, aRevoked}); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	markPublished(t, s, b.UUID, bCreated)
	deleted := 0
	for range 10 {
		n := purge(t, s, time.Now().Add(time.Minute), 1)
		if n > 2 {
			t.Fatalf("PurgePublished(limit 1) deleted %d events", n)
		}
		if n == 0 {
			break
		}
		deleted += n
	}
	if deleted != 3 {
		t.Errorf("the purges deleted %d events, want 3", deleted)
	}
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount after the purge = %d, want 0", n)
	}
	if recs := exportAll(t, s); len(recs) != 1 || recs[0].Password.UUID != b.UUID {
		t.Errorf("after the purge the store keeps %d records, want b only", len(recs))
	}
	if l := list(t, s, owner); !slices.Equal(uuids(l), []string{b.UUID}) {
		t.Errorf("List after the purge = %v, want [%s]", uuids(l), b.UUID)
	}
	if n, err := s.RequeuePublished(ctx(t)); err != nil || n != 0 {
		t.Errorf("RequeuePublished after the purge = %d, %v; want 0", n, err)
	}
}

func keys(m map[string][]apppass.Event) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func claim(t *testing.T, s Backend, uuid, owner string, lease time.Duration) []apppass.Event {
	t.Helper()
	evs, err := s.ClaimPending(ctx(t), uuid, owner, lease)
	if err != nil {
		t.Fatalf("ClaimPending(%s, %s): %v", uuid, owner, err)
	}
	return evs
}

func wantClaimed(t *testing.T, s Backend, what, uuid, owner string) {
	t.Helper()
	evs, err := s.ClaimPending(ctx(t), uuid, owner, time.Minute)
	if !errors.Is(err, apppass.ErrClaimed) {
		t.Errorf("%s: ClaimPending by %s = %v, %v; want ErrClaimed", what, owner, fmtEvents(evs), err)
	}
}

func release(t *testing.T, s Backend, uuid, owner string, published *apppass.Event) {
	t.Helper()
	err := s.ReleaseClaim(ctx(t), uuid, owner)
	if published != nil {
		err = s.MarkPublished(ctx(t), uuid, owner, []apppass.Event{*published})
	}
	if err != nil {
		t.Fatalf("ReleaseClaim(%s, %s): %v", uuid, owner, err)
	}
}

// testOutboxClaim: a claim hands one relay a password's pending events and
// keeps the others (and the sweep's Pending) off them until it is released.
func testOutboxClaim(t *testing.T, s Backend) {
	owner := newUser()
	a, b := newPassword(owner, "mail", "a", now()), newPassword(owner, "mail", "b", now())
	aCreated, bCreated := insert(t, s, a, 10), insert(t, s, b, 10)
	_, aRevoked := revoke(t, s, a)

	checkEvents(t, "relay 1 claims a", claim(t, s, a.UUID, "relay-1", time.Minute), aCreated, aRevoked)
	wantClaimed(t, s, "a held by relay 1", a.UUID, "relay-2")
	// The holder may claim again (renewing its lease).
	checkEvents(t, "relay 1 claims a again", claim(t, s, a.UUID, "relay-1", time.Minute), aCreated, aRevoked)
	// A claim is not an event: the count and the contents stay.
	if n := pendingCount(t, s); n != 3 {
		t.Errorf("PendingCount with a claimed = %d, want 3", n)
	}
	if got := pending(t, s); len(got) != 1 || got[b.UUID] == nil {
		t.Errorf("Pending with a claimed = %v, want b only", keys(got))
	}

	// Another relay's release or mark does not end relay 1's claim.
	release(t, s, a.UUID, "relay-2", nil)
	wantClaimed(t, s, "a after relay 2's release", a.UUID, "relay-2")

	// Relay 1 publishes created, then lets go with the mark of... nothing
	// more: say NATS failed before the revoked event.
	markPublished(t, s, a.UUID, aCreated)
	release(t, s, a.UUID, "relay-1", nil)
	checkEvents(t, "relay 2 claims a after the release", claim(t, s, a.UUID, "relay-2", time.Minute), aRevoked)
	wantClaimed(t, s, "a held by relay 2", a.UUID, "relay-1")
	// Marking the last event and releasing is one call; a published
	// revoked password is gone.
	release(t, s, a.UUID, "relay-2", &aRevoked)
	if evs := claim(t, s, a.UUID, "relay-1", time.Minute); len(evs) != 0 {
		t.Errorf("ClaimPending of a published revoked password = %s, want nothing", fmtEvents(evs))
	}
	if _, err := events(s.Revoke(ctx(t), owner, a.UUID, revokedBy("", new(apppass.Event), new(apppass.Password)), nil)); !errors.Is(err, apppass.ErrNotFound) {
		t.Errorf("Revoke of a published revoked password = %v, want ErrNotFound", err)
	}

	// b: release with its only event marks it; b stays active, and a later
	// event can be claimed by anyone.
	checkEvents(t, "relay 1 claims b", claim(t, s, b.UUID, "relay-1", time.Minute), bCreated)
	release(t, s, b.UUID, "relay-1", &bCreated)
	release(t, s, b.UUID, "relay-1", &bCreated) // a repeat: harmless
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount after publishing everything = %d, want 0", n)
	}
	if evs := claim(t, s, b.UUID, "relay-2", time.Minute); len(evs) != 0 {
		t.Errorf("ClaimPending with nothing pending = %s, want nothing", fmtEvents(evs))
	}
	_, bRevoked := revoke(t, s, b)
	checkEvents(t, "relay 2 claims b's revocation", claim(t, s, b.UUID, "relay-2", time.Minute), bRevoked)
	// An event queued while the claim is held is in the next claim.
	release(t, s, b.UUID, "relay-2", nil)
	if l := list(t, s, owner); len(l) != 0 {
		t.Errorf("List after both revocations = %v, want none", uuids(l))
	}
	markPublished(t, s, b.UUID, bRevoked)

	// A password that never existed: nothing to claim, nothing to release.
	ghost := newPassword(owner, "mail", "ghost", now())
	if evs := claim(t, s, ghost.UUID, "relay-1", time.Minute); len(evs) != 0 {
		t.Errorf("ClaimPending of a missing password = %s", fmtEvents(evs))
	}
	release(t, s, ghost.UUID, "relay-1", nil)
	ghostCreated := createdEvent(ghost)
	release(t, s, ghost.UUID, "relay-1", &ghostCreated)
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount at the end = %d, want 0", n)
	}
}

// testOutboxClaimTakeover: a relay that dies holding a claim is taken over
// when its lease runs out; if it comes back late, its marks still count but
// it cannot take the claim back.
func testOutboxClaimTakeover(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "eas", "phone", now())
	created := insert(t, s, p, 10)
	_, revoked := revoke(t, s, p)

	claim(t, s, p.UUID, "dead", 300*time.Millisecond)
	wantClaimed(t, s, "while the lease runs", p.UUID, "heir")
	if got := pending(t, s); len(got) != 0 {
		t.Errorf("Pending while the lease runs = %v, want none", keys(got))
	}
	time.Sleep(400 * time.Millisecond)
	if got := pending(t, s); len(got) != 1 {
		t.Errorf("Pending after the lease ran out = %v, want the password", keys(got))
	}
	checkEvents(t, "the heir's claim", claim(t, s, p.UUID, "heir", time.Minute), created, revoked)
	wantClaimed(t, s, "the dead relay, back late", p.UUID, "dead")

	// The late relay had published created: its mark counts, its release
	// does not end the heir's claim.
	release(t, s, p.UUID, "dead", &created)
	checkEvents(t, "pending after the late mark", claim(t, s, p.UUID, "heir", time.Minute), revoked)
	wantClaimed(t, s, "after the late relay's release", p.UUID, "dead")
	release(t, s, p.UUID, "heir", &revoked)
	if n := pendingCount(t, s); n != 0 {
		t.Errorf("PendingCount = %d, want 0", n)
	}
}

// testOutboxClaimConcurrent: of relays racing for one password's claim,
// exactly one wins.
func testOutboxClaimConcurrent(t *testing.T, s Backend) { claimRace(t, s, s) }
