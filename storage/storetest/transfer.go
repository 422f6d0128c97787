package storetest

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
)

// exportAll reads every record out of s, a few at a time.
func exportAll(t *testing.T, s Backend) []apppass.PasswordRecord {
	t.Helper()
	var out []apppass.PasswordRecord
	after := ""
	for {
		page, err := s.ExportPasswords(ctx(t), after, 2)
		if err != nil {
			t.Fatalf("ExportPasswords: %v", err)
		}
		out = append(out, page...)
		if len(page) < 2 {
			return out
		}
		after = page[len(page)-1].Password.UUID
	}
}

func hasUUID(rs []apppass.PasswordRecord, uuid string) bool {
	return slices.ContainsFunc(rs, func(r apppass.PasswordRecord) bool { return r.Password.UUID == uuid })
}

// testForgotten: a revoked password whose events are all published is
// gone from the store, digest and all; nothing is kept of it.
func testForgotten(t *testing.T, s Backend) {
	owner := newUser()
	p := newPassword(owner, "mail", "phone", now())
	created := insert(t, s, p, 10)
	_, revoked := revoke(t, s, p)
	if n, err := s.CountPasswords(ctx(t)); err != nil || n != 1 {
		t.Fatalf("CountPasswords with the revoked event pending = %d, %v; want 1", n, err)
	}
	markPublished(t, s, p.UUID, created)
	markPublished(t, s, p.UUID, revoked)
	if n, err := s.CountPasswords(ctx(t)); err != nil || n != 1 {
		t.Fatalf("CountPasswords with the revoked event published, not purged = %d, %v; want 1", n, err)
	}
	if got := purge(t, s, time.Now().Add(time.Second), 100); got != 2 {
		t.Fatalf("PurgePublished deleted %d events, want 2", got)
	}
	if n, err := s.CountPasswords(ctx(t)); err != nil || n != 0 {
		t.Fatalf("CountPasswords after the revoked event was published = %d, %v; want 0", n, err)
	}
	if recs := exportAll(t, s); len(recs) != 0 {
		t.Fatalf("ExportPasswords still has %d records", len(recs))
	}
	// Its digest is free again: nothing of it is left to collide with.
	again := newPassword(owner, "mail", "phone again", now())
	again.Digest = p.Digest
	insert(t, s, again, 10)
	if got, err := s.FindByDigest(ctx(t), p.Digest); err != nil || got.UUID != again.UUID {
		t.Fatalf("FindByDigest = %v, %v; want the new password", got, err)
	}
}

func testDigestKey(t *testing.T, s Backend) {
	if id, err := s.DigestKeyID(ctx(t)); err != nil || id != "" {
		t.Fatalf("a fresh store's DigestKeyID = %q, %v; want none", id, err)
	}
	if err := s.BindDigestKey(ctx(t), "k1"); err != nil {
		t.Fatalf("BindDigestKey on a fresh store: %v", err)
	}
	if err := s.BindDigestKey(ctx(t), "k1"); err != nil {
		t.Fatalf("BindDigestKey with the same key again: %v", err)
	}
	if err := s.BindDigestKey(ctx(t), "k2"); !errors.Is(err, apppass.ErrDigestKeyMismatch) {
		t.Fatalf("BindDigestKey with another key = %v, want ErrDigestKeyMismatch", err)
	}
	if id, err := s.DigestKeyID(ctx(t)); err != nil || id != "k1" {
		t.Fatalf("DigestKeyID = %q, %v; want k1", id, err)
	}
}

// testTransfer copies everything out of src into an empty dst and checks
// that dst then behaves as src did: logins, limits, pending events, the
// revoked password still to be announced, the webhook queue.
func testTransfer(t *testing.T, src, dst Backend) {
	owner := newUser()
	t0 := now().Add(-time.Hour)
	full := newPassword(owner, "caldav", "Tablet ✓", t0)
	exp := t0.Add(48 * time.Hour)
	full.Expires, full.IdleExpiry = &exp, 24*time.Hour
	full.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	fullCreated := insert(t, src, full, 3)
	markPublished(t, src, full.UUID, fullCreated)
	login := apppass.LastLogin{Time: t0.Add(time.Minute), IP: "192.0.2.9", Device: "iPad", UserAgent: "DAVx5"}
	used := event(apppass.EventFirstUse, login.Time, full, "")
	deadline := login.Time.Add(full.IdleExpiry)
	if _, err := src.RecordLogin(ctx(t), full.UUID, login, &deadline, &used); err != nil {
		t.Fatal(err)
	}
	fresh := newPassword(owner, "mail", "Phone", t0.Add(time.Second))
	freshCreated := insert(t, src, fresh, 3)
	gone := newPassword(owner, "mail", "Old phone", t0.Add(2*time.Second))
	markPublished(t, src, gone.UUID, insert(t, src, gone, 3))
	_, goneRevoked := revoke(t, src, gone)

	at := now()
	pendingHook := delivery("ev-p", "crm", at)
	deliveredHook := delivery("ev-d", "crm", at)
	for _, d := range []apppass.WebhookDelivery{pendingHook, deliveredHook} {
		if _, err := src.EnqueueWebhook(ctx(t), d); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := src.ClaimWebhooks(ctx(t), at, at.Add(time.Minute), "tok", nil, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("ClaimWebhooks = %d, %v", len(claimed), err)
	}
	retry := at.Add(time.Hour)
	finish := map[string]apppass.WebhookOutcome{
		pendingHook.ID:   {State: apppass.DeliveryPending, At: at, NextAttempt: retry, Status: 503, Error: "HTTP 503", Counted: true},
		deliveredHook.ID: {State: apppass.DeliveryDelivered, At: at, Status: 200, Counted: true},
	}
	for id, o := range finish {
		if err := src.FinishWebhookAttempt(ctx(t), id, "tok", o); err != nil {
			t.Fatal(err)
		}
	}

	if n, err := src.CountPasswords(ctx(t)); err != nil || n != 3 {
		t.Fatalf("CountPasswords = %d, %v; want 3", n, err)
	}
	recs := exportAll(t, src)
	if len(recs) != 3 || !slices.IsSortedFunc(recs, func(a, b apppass.PasswordRecord) int {
		return strings.Compare(a.Password.UUID, b.Password.UUID)
	}) {
		t.Fatalf("ExportPasswords returned %d records, want 3 in UUID order", len(recs))
	}
	for _, r := range recs {
		switch r.Password.UUID {
		case full.UUID:
			checkEvents(t, "exported pending of full", r.Pending, used)
			if r.Revoked != nil || r.Password.Digest != full.Digest || r.Password.LastLogin == nil || *r.Password.LastLogin != login {
				t.Errorf("exported full = %+v", r)
			}
		case fresh.UUID:
			checkEvents(t, "exported pending of fresh", r.Pending, freshCreated)
		case gone.UUID:
			checkEvents(t, "exported pending of gone", r.Pending, goneRevoked)
			if r.Revoked == nil || r.Revoked.Reason != apppass.ReasonUser || !r.Revoked.Time.Equal(goneRevoked.Timestamp) {
				t.Errorf("exported gone: Revoked = %+v", r.Revoked)
			}
		}
	}

	for round := range 2 { // the second import is a resumed copy: nothing new
		n, err := dst.ImportPasswords(ctx(t), recs)
		if want := []int{3, 0}[round]; err != nil || n != want {
			t.Fatalf("ImportPasswords round %d = %d, %v; want %d", round, n, err, want)
		}
	}
	hooks, err := src.ExportWebhookDeliveries(ctx(t), "", 10)
	if err != nil || len(hooks) != 1 || hooks[0].ID != pendingHook.ID || string(hooks[0].Body) != string(pendingHook.Body) ||
		hooks[0].Attempts != 1 || hooks[0].NextAttempt == nil || !hooks[0].NextAttempt.Equal(retry) {
		t.Fatalf("ExportWebhookDeliveries = %+v, %v; want the pending one with its body and attempt", hooks, err)
	}
	for round := range 2 {
		n, err := dst.ImportWebhookDeliveries(ctx(t), hooks)
		if want := []int{1, 0}[round]; err != nil || n != want {
			t.Fatalf("ImportWebhookDeliveries round %d = %d, %v; want %d", round, n, err, want)
		}
	}

	// dst answers as src did.
	got, err := dst.FindByDigest(ctx(t), full.Digest)
	if err != nil || got.UUID != full.UUID || got.Owner != owner || got.LastLogin == nil || *got.LastLogin != login ||
		!got.Expires.Equal(exp) || got.IdleExpiry != full.IdleExpiry || !slices.Equal(got.AllowedIPs, full.AllowedIPs) ||
		!slices.Equal(got.KnownIPs, []string{login.IP}) {
		t.Fatalf("dst FindByDigest = %+v, %v", got, err)
	}
	if _, err := dst.FindByDigest(ctx(t), gone.Digest); !errors.Is(err, apppass.ErrRejected) {
		t.Fatalf("dst FindByDigest of the revoked password = %v, want ErrRejected", err)
	}
	if l := list(t, dst, owner); !slices.Equal(uuids(l), []string{fresh.UUID, full.UUID}) {
		t.Fatalf("dst List = %v, want [fresh full]", uuids(l))
	}
	p := pending(t, dst)
	checkEvents(t, "dst pending of full", p[full.UUID], used)
	checkEvents(t, "dst pending of fresh", p[fresh.UUID], freshCreated)
	checkEvents(t, "dst pending of gone", p[gone.UUID], goneRevoked)
	// The imported passwords count toward the limit.
	extra := newPassword(owner, "mail", "third", now())
	insert(t, dst, extra, 3)
	over := newPassword(owner, "mail", "fourth", now())
	checkKind(t, "insert over the limit after an import", inserted(dst.Insert(ctx(t), over, createdEvent(over), 3, nil)), apppass.KindLimit)
	// The revoked one is forgotten once announced, as in src.
	markPublished(t, dst, gone.UUID, goneRevoked)
	purge(t, dst, time.Now().Add(time.Second), 100)
	if recs := exportAll(t, dst); hasUUID(recs, gone.UUID) {
		t.Fatal("dst keeps the revoked password after its revoked event was published and purged")
	}
	ds, err := dst.ClaimWebhooks(ctx(t), retry, retry.Add(time.Minute), "tok2", nil, 10)
	if err != nil || len(ds) != 1 || ds[0].ID != pendingHook.ID || ds[0].Attempts != 1 || string(ds[0].Body) != string(pendingHook.Body) {
		t.Fatalf("dst ClaimWebhooks when due = %+v, %v", ds, err)
	}
}
