package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
)

func delivery(eventID, endpoint string, created time.Time) apppass.WebhookDelivery {
	return apppass.WebhookDelivery{ID: eventID + ":" + endpoint, EventID: eventID, EventType: apppass.EventRevoked,
		Endpoint: endpoint, Body: []byte(`{"id":"` + eventID + `","data":{"name":"Mon téléphone"}}`), Created: created}
}

func testWebhookQueue(t *testing.T, s Backend) {
	ctx := ctx(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := delivery("ev1", "a", now)
	if fresh, err := s.EnqueueWebhook(ctx, d); err != nil || !fresh {
		t.Fatalf("first enqueue: %v %v", fresh, err)
	}
	if fresh, err := s.EnqueueWebhook(ctx, d); err != nil || fresh {
		t.Fatalf("second enqueue of the same id must be a no-op: %v %v", fresh, err)
	}
	if _, err := s.EnqueueWebhook(ctx, delivery("ev1", "b", now)); err != nil {
		t.Fatal(err)
	}

	// Skipping endpoint b leaves only a's.
	got, err := s.ClaimWebhooks(ctx, now, now.Add(time.Minute), "t1", []string{"b"}, 10)
	if err != nil || len(got) != 1 || got[0].ID != "ev1:a" {
		t.Fatalf("claim skipping b = %+v, %v", got, err)
	}
	if string(got[0].Body) != string(d.Body) || got[0].LeaseToken != "t1" || got[0].State != apppass.DeliveryPending {
		t.Fatalf("claimed %+v (body %s)", got[0], got[0].Body)
	}
	// Leased: nobody else gets it until the lease runs out.
	if again, _ := s.ClaimWebhooks(ctx, now, now.Add(time.Minute), "t2", []string{"b"}, 10); len(again) != 0 {
		t.Fatalf("a leased delivery was claimed again: %+v", again)
	}
	later := now.Add(2 * time.Minute)
	taken, err := s.ClaimWebhooks(ctx, later, later.Add(time.Minute), "t2", []string{"b"}, 10)
	if err != nil || len(taken) != 1 {
		t.Fatalf("claim after the lease ran out = %+v, %v", taken, err)
	}
	// The first holder lost it: its outcome is refused.
	err = s.FinishWebhookAttempt(ctx, "ev1:a", "t1", apppass.WebhookOutcome{State: apppass.DeliveryDelivered, At: later, Status: 200, Counted: true})
	if !errors.Is(err, apppass.ErrLeaseLost) {
		t.Fatalf("finish with a lost lease: %v", err)
	}
	// A retry: pending again, due later, attempt counted.
	next := later.Add(time.Hour)
	err = s.FinishWebhookAttempt(ctx, "ev1:a", "t2", apppass.WebhookOutcome{State: apppass.DeliveryPending, At: later,
		NextAttempt: next, Status: 500, Error: "HTTP 500", Counted: true})
	if err != nil {
		t.Fatal(err)
	}
	if early, _ := s.ClaimWebhooks(ctx, later, later.Add(time.Minute), "t3", []string{"b"}, 10); len(early) != 0 {
		t.Fatalf("claimed before it was due: %+v", early)
	}
	due, err := s.ClaimWebhooks(ctx, next, next.Add(time.Minute), "t3", nil, 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("claim when due = %+v, %v", due, err)
	}
	for _, d := range due {
		if err := s.FinishWebhookAttempt(ctx, d.ID, "t3", apppass.WebhookOutcome{State: apppass.DeliveryDelivered, At: next, Status: 204, Counted: true}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.WebhookDeliveries(ctx, apppass.WebhookQuery{Endpoint: "a", Limit: 10})
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	a := list[0]
	if a.State != apppass.DeliveryDelivered || a.Attempts != 2 || a.LastStatus != 204 || a.Finished == nil ||
		!a.Finished.Equal(next) || a.NextAttempt != nil || len(a.Body) != 0 || a.LeaseToken != "" {
		t.Fatalf("delivered = %+v", a)
	}
	if n, err := s.CountWebhookDeliveries(ctx, "b", apppass.DeliveryDelivered); err != nil || n != 1 {
		t.Fatalf("count = %d, %v", n, err)
	}
	if n, err := s.PurgeWebhookDeliveries(ctx, next); err != nil || n != 0 {
		t.Fatalf("purge of nothing old enough = %d, %v", n, err)
	}
	if n, err := s.PurgeWebhookDeliveries(ctx, next.Add(time.Millisecond)); err != nil || n != 2 {
		t.Fatalf("purge = %d, %v", n, err)
	}
}

// testWebhookClaimConcurrent: claimers racing for the same due deliveries
// (as the dispatcher's claims do) never get one delivery twice.
func testWebhookClaimConcurrent(t *testing.T, s Backend) { webhookClaimRace(t, s, s) }

func webhookClaimRace(t *testing.T, a, b Backend) {
	ctx := ctx(t)
	s := a
	now := time.Now().UTC().Truncate(time.Millisecond)
	const n = 40
	for i := range n {
		if _, err := s.EnqueueWebhook(ctx, delivery(fmt.Sprintf("ev%02d", i), "a", now)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for {
				claimer := a
				if w%2 == 1 {
					claimer = b
				}
				ds, err := claimer.ClaimWebhooks(ctx, now, now.Add(time.Minute), fmt.Sprint("w", w), nil, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					got = append(got, d.ID)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("a delivery was claimed twice: %v", got)
	}
	// A claimer may give up early while others race; whatever is left is
	// still claimable.
	rest, err := s.ClaimWebhooks(ctx, now, now.Add(time.Minute), "last", nil, n)
	if err != nil || len(got)+len(rest) != n {
		t.Fatalf("claimed %d + %d of %d: %v", len(got), len(rest), n, err)
	}
}

func testWebhookEndpoints(t *testing.T, s Backend) {
	ctx := ctx(t)
	at := time.Now().UTC().Truncate(time.Millisecond)
	st := apppass.WebhookEndpointState{Name: "crm", URL: "https://crm.example/hook", Disabled: at, Reason: "410 Gone"}
	if err := s.DisableWebhookEndpoint(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableWebhookEndpoint(ctx, st); err != nil {
		t.Fatalf("disabling twice: %v", err)
	}
	states, err := s.WebhookEndpointStates(ctx)
	if err != nil || len(states) != 1 || states[0] != st {
		t.Fatalf("states = %+v, %v", states, err)
	}
	if ok, err := s.EnableWebhookEndpoint(ctx, "crm"); err != nil || !ok {
		t.Fatalf("enable = %v %v", ok, err)
	}
	if ok, err := s.EnableWebhookEndpoint(ctx, "crm"); err != nil || ok {
		t.Fatalf("enable again = %v %v", ok, err)
	}

}

func testReplayIDs(t *testing.T, s Backend) {
	ctx := ctx(t)
	at := now()
	if seen, err := s.SeenWebhookID(ctx, "msg_1"); err != nil || seen {
		t.Fatalf("seen before = %v %v", seen, err)
	}
	if err := s.RememberWebhookID(ctx, "msg_1", at.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RememberWebhookID(ctx, "msg_1", at); err != nil {
		t.Fatalf("remembering twice: %v", err)
	}
	if err := s.RememberWebhookID(ctx, "msg_2", at); err != nil {
		t.Fatal(err)
	}
	if seen, err := s.SeenWebhookID(ctx, "msg_1"); err != nil || !seen {
		t.Fatalf("seen after = %v %v", seen, err)
	}
	if err := s.PurgeWebhookIDs(ctx, at.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if seen, _ := s.SeenWebhookID(ctx, "msg_1"); seen {
		t.Fatal("msg_1 (first seen an hour ago) survived the purge")
	}
	if seen, _ := s.SeenWebhookID(ctx, "msg_2"); !seen {
		t.Fatal("msg_2 was purged too early")
	}
}
