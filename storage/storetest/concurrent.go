package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
)

// race runs f(i) for i in [0, n) at once, all released together.
func race(n int, f func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

// testRevokeConcurrent: of removes racing for one password, exactly one
// revokes it and queues one revoked event.
func testRevokeConcurrent(t *testing.T, s Backend) {
	revokeRace(t, s, s)
}

func revokeRace(t *testing.T, a, b Backend) {
	owner := newUser()
	for round := range 5 {
		p := newPassword(owner, "mail", fmt.Sprint(round), now())
		created := insert(t, a, p, 10)
		markPublished(t, a, p.UUID, created)
		var mu sync.Mutex
		var won []apppass.Event
		race(8, func(i int) {
			s := a
			if i%2 == 1 {
				s = b
			}
			var ev apppass.Event
			var seen apppass.Password
			pending, err := events(s.Revoke(ctx(t), owner, p.UUID, revokedBy(apppass.ReasonUser, &ev, &seen), nil))
			switch {
			case errors.Is(err, apppass.ErrNotFound):
			case err != nil:
				t.Errorf("Revoke: %v", err)
			default:
				checkEvents(t, "the winner's pending events", pending, ev)
				mu.Lock()
				won = append(won, ev)
				mu.Unlock()
			}
		})
		if len(won) != 1 {
			t.Fatalf("round %d: %d of 8 racing revocations succeeded, want exactly 1", round, len(won))
		}
		checkEvents(t, "pending after the race", pending(t, b)[p.UUID], won[0])
		if n := pendingCount(t, a); n != 1 {
			t.Fatalf("PendingCount = %d after one revocation, want 1", n)
		}
		markPublished(t, b, p.UUID, won[0])
	}
	if l := list(t, a, owner); len(l) != 0 {
		t.Errorf("List after revoking everything = %v", uuids(l))
	}
}

// testRecordLoginConcurrent: of logins racing to record a first use, one
// queues the first-use event.
func testRecordLoginConcurrent(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "mail", "Phone", now())
	markPublished(t, s, p.UUID, insert(t, s, p, 10))
	var mu sync.Mutex
	queued := 0
	race(8, func(i int) {
		login := apppass.LastLogin{Time: now(), IP: fmt.Sprintf("192.0.2.%d", i+1)}
		used := event(apppass.EventFirstUse, login.Time, p, "")
		ok, err := s.RecordLogin(ctx(t), p.UUID, login, nil, &used)
		if err != nil {
			t.Errorf("RecordLogin: %v", err)
		}
		if ok {
			mu.Lock()
			queued++
			mu.Unlock()
		}
	})
	if queued != 1 {
		t.Fatalf("%d of 8 racing first logins queued a first-use event, want 1", queued)
	}
	if n := pendingCount(t, s); n != 1 {
		t.Fatalf("PendingCount = %d, want 1", n)
	}
}

// crossHandleCases run on two stores opened separately on one database;
// those that race need a backend that isolates the two.
var crossHandleCases = []struct {
	name  string
	races bool
	run   func(t *testing.T, a, b Backend)
}{
	{"Visibility", false, crossVisibility},
	{"Limit", true, crossLimit},
	{"Revoke", true, revokeRace},
	{"Claim", true, claimRace},
	{"Publish", true, crossPublish},
	{"Throttle", true, crossThrottle},
	{"WebhookClaim", true, crossWebhookClaim},
}

// crossVisibility: what one store writes, the other sees at once.
func crossVisibility(t *testing.T, a, b Backend) {
	owner := newUser()
	p := newPassword(owner, "mail", "phone", now())
	insert(t, a, p, 10)
	if got, err := b.FindByDigest(ctx(t), p.Digest); err != nil || got.UUID != p.UUID {
		t.Fatalf("the other store's FindByDigest after Insert = %v, %v", got, err)
	}
	revoke(t, b, p)
	if got, err := a.FindByDigest(ctx(t), p.Digest); !errors.Is(err, apppass.ErrRejected) {
		t.Fatalf("FindByDigest after the other store's Revoke = %v, %v; want ErrRejected", got, err)
	}
}

// crossLimit: inserts split over two stores still stop at the limit.
func crossLimit(t *testing.T, a, b Backend) {
	const tries, limit = 20, 5
	owner := newUser()
	var mu sync.Mutex
	ok := 0
	race(tries, func(i int) {
		s := a
		if i%2 == 1 {
			s = b
		}
		p := newPassword(owner, "mail", fmt.Sprint("racer ", i), now())
		err := inserted(s.Insert(ctx(t), p, createdEvent(p), limit, nil))
		switch {
		case err == nil:
			mu.Lock()
			ok++
			mu.Unlock()
		case apppass.KindOf(err) != apppass.KindLimit:
			t.Errorf("insert %d: %v", i, err)
		}
	})
	if ok != limit {
		t.Errorf("%d of %d inserts over two stores succeeded, want exactly %d", ok, tries, limit)
	}
	if got := list(t, b, owner); len(got) != limit {
		t.Errorf("List has %d passwords, want %d", len(got), limit)
	}
	if n := pendingCount(t, a); n != limit {
		t.Errorf("PendingCount = %d, want %d created events", n, limit)
	}
}

// claimRace: relays on two stores (or one) racing for one password's
// claim: one wins.
func claimRace(t *testing.T, a, b Backend) {
	owner := newUser()
	for round := range 5 {
		p := newPassword(owner, "mail", fmt.Sprint(round), now())
		created := insert(t, a, p, 10)
		var mu sync.Mutex
		var winners []string
		race(8, func(i int) {
			s, relay := a, fmt.Sprintf("relay-a%d", i)
			if i%2 == 1 {
				s, relay = b, fmt.Sprintf("relay-b%d", i)
			}
			evs, err := s.ClaimPending(ctx(t), p.UUID, relay, time.Minute)
			switch {
			case errors.Is(err, apppass.ErrClaimed):
			case err != nil:
				t.Errorf("ClaimPending: %v", err)
			default:
				checkEvents(t, relay+"'s claim", evs, created)
				mu.Lock()
				winners = append(winners, relay)
				mu.Unlock()
			}
		})
		if len(winners) != 1 {
			t.Fatalf("round %d: %d relays on two stores won the claim (%v), want exactly 1", round, len(winners), winners)
		}
		release(t, b, p.UUID, winners[0], &created)
	}
	if n := pendingCount(t, a); n != 0 {
		t.Errorf("PendingCount = %d, want 0", n)
	}
}

// crossPublish: two relays on two stores mark the same events published
// at once (a takeover whose first relay was only slow): every event is
// counted out once, the count never goes below what is left, and a revoked
// password is forgotten once its last event is out.
func crossPublish(t *testing.T, a, b Backend) {
	owner := newUser()
	keep := newPassword(owner, "mail", "keep", now())
	keepCreated := insert(t, a, keep, 10)
	for round := range 8 {
		p := newPassword(owner, "mail", fmt.Sprint(round), now())
		created := insert(t, a, p, 10)
		_, revoked := revoke(t, a, p)
		race(4, func(i int) {
			s := a
			if i%2 == 1 {
				s = b
			}
			for _, ev := range []apppass.Event{created, revoked} {
				owner := "" // a mark without a claim
				if i >= 2 {
					owner = fmt.Sprint("relay-", i)
				}
				if err := s.MarkPublished(ctx(t), p.UUID, owner, []apppass.Event{ev}); err != nil {
					t.Errorf("publishing %s: %v", ev.Type, err)
				}
			}
		})
		if n := pendingCount(t, b); n != 1 {
			t.Fatalf("round %d: PendingCount = %d after both relays published, want 1 (keep's created event)", round, n)
		}
		if got := pending(t, a); len(got) != 1 || len(got[keep.UUID]) != 1 {
			t.Fatalf("round %d: Pending = %v, want keep's created event only", round, keys(got))
		}
		if _, err := a.PurgePublished(ctx(t), time.Now().Add(time.Second), 100); err != nil {
			t.Fatalf("PurgePublished: %v", err)
		}
		if recs := exportAll(t, b); hasUUID(recs, p.UUID) {
			t.Fatalf("round %d: the revoked password is still kept after its last event was published and purged", round)
		}
	}
	markPublished(t, b, keep.UUID, keepCreated)
	if n := pendingCount(t, a); n != 0 {
		t.Errorf("PendingCount = %d, want 0", n)
	}
}

// crossThrottle: failures counted through two stores all count.
func crossThrottle(t *testing.T, a, b Backend) {
	key := "ip:" + randomHex(4)
	t0 := now()
	race(20, func(i int) {
		s := a
		if i%2 == 1 {
			s = b
		}
		if _, err := s.AddFailure(ctx(t), key, t0, t0.Add(-time.Minute)); err != nil {
			t.Errorf("AddFailure: %v", err)
		}
	})
	if got, err := b.Failures(ctx(t), []string{key}); err != nil || got[key].Failures != 20 {
		t.Fatalf("20 failures over two stores counted as %+v, %v", got[key], err)
	}
}

// crossWebhookClaim: dispatchers on two stores never get one delivery twice.
func crossWebhookClaim(t *testing.T, a, b Backend) {
	webhookClaimRace(t, a, b)
}

// testClaimWithTheWrite: a write given a Claim leases the outbox to its
// owner in the same write, unless another owner's lease runs; a leased
// outbox is left out of Pending but for its owner's.
func testClaimWithTheWrite(t *testing.T, s Backend) {
	owner := newUser()
	mine := &apppass.Claim{Owner: "relay-a", Lease: time.Minute}
	p := newPassword(owner, "mail", "phone", now())
	created := createdEvent(p)
	pe, err := s.Insert(ctx(t), p, created, 10, mine)
	if err != nil {
		t.Fatal(err)
	}
	if pe.PasswordUUID != p.UUID || pe.ClaimedUntil.Before(time.Now().Add(50*time.Second)) {
		t.Fatalf("Insert with a claim returned %+v, want the outbox leased for a minute", pe)
	}
	checkEvents(t, "Insert's pending events", pe.Events, created)
	if got := pending(t, s); len(got) != 0 {
		t.Errorf("Pending lists %v while relay-a's lease runs", keys(got))
	}
	if ps, err := s.Pending(ctx(t), 10, "relay-a"); err != nil || len(ps) != 1 {
		t.Errorf("Pending for relay-a = %v, %v; want its own claimed password", ps, err)
	}
	wantClaimed(t, s, "another relay while relay-a's lease runs", p.UUID, "relay-b")

	// Another relay holds the lease: Revoke stores the revocation but
	// takes no lease.
	release(t, s, p.UUID, "relay-a", nil) // relay-a lets go, publishing nothing
	checkEvents(t, "relay-b claims", claim(t, s, p.UUID, "relay-b", time.Minute), created)
	var revoked apppass.Event
	var seen apppass.Password
	pe, err = s.Revoke(ctx(t), owner, p.UUID, revokedBy(apppass.ReasonUser, &revoked, &seen), mine)
	if err != nil {
		t.Fatal(err)
	}
	if !pe.ClaimedUntil.IsZero() {
		t.Errorf("Revoke took relay-a's lease while relay-b's ran: %+v", pe)
	}
	checkEvents(t, "Revoke's pending events", pe.Events, created, revoked)
	release(t, s, p.UUID, "relay-b", &created)

	// Nobody's lease: Revoke takes it.
	q := newPassword(owner, "mail", "tablet", now())
	qCreated := insert(t, s, q, 10)
	markPublished(t, s, q.UUID, qCreated)
	pe, err = s.Revoke(ctx(t), owner, q.UUID, revokedBy(apppass.ReasonUser, &revoked, &seen), mine)
	if err != nil || pe.ClaimedUntil.IsZero() {
		t.Fatalf("Revoke with nobody's lease = %+v, %v; want it leased", pe, err)
	}
	checkEvents(t, "Revoke's pending events", pe.Events, revoked)
	wantClaimed(t, s, "another relay after Revoke took the lease", q.UUID, "relay-b")
}
