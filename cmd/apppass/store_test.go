package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage/sqlite"
)

// storeCopy runs apppass store copy in process.
func storeCopy(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	f := &fakeSystem{}
	code = run(append([]string{"store", "copy"}, args...), f.system())
	return code, f.stdout.String(), f.stderr.String()
}

// seedStore writes three passwords into a new SQLite store at path: two
// active (one used, with its first-use event pending), one revoked with
// its revoked event pending; a pending and a delivered webhook; a disabled
// endpoint. The store is closed again.
func seedStore(t *testing.T, path, keyID string) (digests []string) {
	t.Helper()
	s, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.BindDigestKey(ctx, keyID); err != nil {
		t.Fatal(err)
	}
	owner := apppass.User{ContextID: 4, UserID: 7, Login: "copy@example.com"}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var recs []apppass.PasswordRecord
	for i, name := range []string{"Phone", "Tablet", "Old laptop"} {
		p := apppass.Password{UUID: newTestUUID(i), Owner: owner, AppScope: "mail", Name: name, Created: now,
			Digest: "digest-" + testenv.RandomHex(8), KeyID: keyID}
		ev := apppass.Event{ID: testenv.RandomHex(12), Type: apppass.EventCreated, Timestamp: now,
			Data: apppass.EventData{UUID: p.UUID, ContextID: 4, UserID: 7, Login: owner.Login, AppScope: "mail", Name: name}}
		r := apppass.PasswordRecord{Password: p}
		switch i {
		case 1:
			r.Password.LastLogin = &apppass.LastLogin{Time: now, IP: "192.0.2.1"}
			r.Password.KnownIPs = []string{"192.0.2.1"}
			ev.Type = apppass.EventFirstUse
			r.Pending = []apppass.Event{ev}
		case 2:
			r.Revoked = &apppass.Revocation{Time: now, Reason: apppass.ReasonUser}
			ev.Type = apppass.EventRevoked
			r.Pending = []apppass.Event{ev}
		}
		recs = append(recs, r)
		digests = append(digests, p.Digest)
	}
	if _, err := s.ImportPasswords(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ev-pending", "ev-done"} {
		if _, err := s.EnqueueWebhook(ctx, apppass.WebhookDelivery{ID: id + ":crm", EventID: id, EventType: apppass.EventRevoked,
			Endpoint: "crm", Body: []byte(`{"id":"` + id + `"}`), Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := s.ClaimWebhooks(ctx, now, now.Add(time.Minute), "tok", nil, 10)
	if err != nil || len(ds) != 2 {
		t.Fatalf("claim: %v %v", ds, err)
	}
	for _, d := range ds {
		o := apppass.WebhookOutcome{State: apppass.DeliveryDelivered, At: now, Status: 200, Counted: true}
		if d.ID == "ev-pending:crm" {
			o = apppass.WebhookOutcome{State: apppass.DeliveryPending, At: now, NextAttempt: now.Add(time.Hour), Status: 502, Counted: true}
		}
		if err := s.FinishWebhookAttempt(ctx, d.ID, "tok", o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DisableWebhookEndpoint(ctx, apppass.WebhookEndpointState{Name: "old", URL: "https://old.example/h", Disabled: now, Reason: "410"}); err != nil {
		t.Fatal(err)
	}
	return digests
}

func newTestUUID(i int) string {
	return "00000000-0000-4000-8000-00000000000" + string(rune('1'+i))
}

// TestStoreCopy copies the embedded store into MongoDB (FerretDB here) and
// back into another SQLite file: the copy answers as the original did,
// and a second run copies nothing twice.
func TestStoreCopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "apppass.db")
	digests := seedStore(t, src, "key1")
	mongoURI := strings.TrimSuffix(testenv.MongoURI(t), "/") + "/copied"

	code, out, errOut := storeCopy(t, "--from", "sqlite:"+src, "--to", mongoURI)
	if code != 0 || !strings.Contains(out, "copied 3 passwords (3 new, 0 there already), 2 pending events, 1 webhook endpoint states, 1 undelivered webhooks (1 new)") {
		t.Fatalf("copy: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "copying 3 passwords") || !strings.Contains(errOut, "3/3 passwords (100%)") {
		t.Errorf("no progress on stderr: %q", errOut)
	}
	code, out, _ = storeCopy(t, "--from", "sqlite:"+src, "--to", mongoURI)
	if code != 0 || !strings.Contains(out, "(0 new, 3 there already)") || !strings.Contains(out, "(0 new)") {
		t.Fatalf("second copy: exit %d: %s", code, out)
	}

	// Back from MongoDB into a new file, then check that one.
	back := filepath.Join(dir, "back.db")
	if code, out, errOut := storeCopy(t, "--from", mongoURI, "--to", "sqlite:"+back); code != 0 {
		t.Fatalf("copy back: exit %d: %s %s", code, out, errOut)
	}
	for _, check := range []string{mongoURI, back} {
		var s apppass.Store
		if check == back {
			s = testenv.StoreAt(t, back)
		} else {
			s = testenv.MongoStoreAt(t, strings.TrimSuffix(mongoURI, "/copied"), "copied")
		}
		ctx := context.Background()
		if id, err := s.DigestKeyID(ctx); err != nil || id != "key1" {
			t.Errorf("%s: digest key %q %v, want key1", check, id, err)
		}
		for i, d := range digests {
			p, err := s.FindByDigest(ctx, d)
			if i < 2 && (err != nil || p.UUID != newTestUUID(i)) {
				t.Errorf("%s: password %d: %v %v", check, i, p, err)
			}
			if i == 2 && err == nil {
				t.Errorf("%s: the revoked password logs in", check)
			}
		}
		if n, err := s.PendingCount(ctx); err != nil || n != 2 {
			t.Errorf("%s: %d pending events, %v; want 2", check, n, err)
		}
		if sts, err := s.WebhookEndpointStates(ctx); err != nil || len(sts) != 1 || sts[0].Name != "old" {
			t.Errorf("%s: endpoint states %+v %v", check, sts, err)
		}
		if hooks, err := s.ExportWebhookDeliveries(ctx, "", 10); err != nil || len(hooks) != 1 || hooks[0].Attempts != 1 {
			t.Errorf("%s: undelivered webhooks %+v %v", check, hooks, err)
		}
	}
}

// TestStoreCopyRefusals: a store an apppassd uses, and stores of another
// pepper, are refused before anything is written; bad arguments are usage
// errors; a store that cannot be opened is exit 3.
func TestStoreCopyRefusals(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "apppass.db")
	seedStore(t, src, "key1")
	ctx := context.Background()
	count := func(path string) int64 {
		s := testenv.StoreAt(t, path)
		n, err := s.CountPasswords(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return n
	}

	// The destination file is held, as apppassd holds its own.
	busy := filepath.Join(dir, "busy.db")
	held, err := sqlite.Open(busy, sqlite.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := storeCopy(t, "--from", "sqlite:"+src, "--to", "sqlite:"+busy)
	if code != exitFailed || !strings.Contains(errOut, "in use") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("into a store in use: exit %d, stderr %q", code, errOut)
	}
	held.Close()
	if n := count(busy); n != 0 {
		t.Errorf("the store in use got %d passwords", n)
	}
	// The source in use too.
	held, err = sqlite.Open(src, sqlite.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := storeCopy(t, "--from", "sqlite:"+src, "--to", "sqlite:"+filepath.Join(dir, "new.db")); code != exitFailed || !strings.Contains(errOut, "in use") {
		t.Errorf("from a store in use: exit %d, stderr %q", code, errOut)
	}
	held.Close()

	// A MongoDB database with a live apppassd heartbeat.
	uri := strings.TrimSuffix(testenv.MongoURI(t), "/")
	live := testenv.MongoStoreAt(t, uri, "live")
	if err := live.Heartbeat(ctx, "host/1/abc", time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := storeCopy(t, "--from", "sqlite:"+src, "--to", uri+"/live"); code != exitFailed || !strings.Contains(errOut, "in use by 1 apppassd") {
		t.Errorf("into a live MongoDB database: exit %d, stderr %q", code, errOut)
	}
	if n, _ := live.CountPasswords(ctx); n != 0 {
		t.Errorf("the live database got %d passwords", n)
	}

	// Another pepper.
	other := filepath.Join(dir, "other.db")
	o := testenv.StoreAt(t, other)
	if err := o.BindDigestKey(ctx, "key2"); err != nil {
		t.Fatal(err)
	}
	o.Close()
	code, _, errOut = storeCopy(t, "--from", "sqlite:"+src, "--to", "sqlite:"+other)
	if code != exitFailed || !strings.Contains(errOut, "different peppers") || !strings.Contains(errOut, "nothing was copied") {
		t.Errorf("between peppers: exit %d, stderr %q", code, errOut)
	}
	if n := count(other); n != 0 {
		t.Errorf("the other pepper's store got %d passwords", n)
	}

	for _, args := range [][]string{
		{"--from", "sqlite:" + src},
		{"--to", "sqlite:" + src},
		{"--from", "postgres://x", "--to", "sqlite:" + other},
		{"--from", "sqlite:", "--to", "sqlite:" + other},
		{"--from", "sqlite:" + src, "--to", "sqlite:" + src},
		{"--from", "sqlite:" + src, "--to", "sqlite:" + other, "extra"},
	} {
		if code, _, errOut := storeCopy(t, args...); code != exitUsage || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want a usage error in one line", args, code, errOut)
		}
	}
	f := &fakeSystem{}
	if code := run([]string{"store", "move"}, f.system()); code != exitUsage {
		t.Errorf("store move: exit %d", code)
	}

	// A file that is not a database.
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("not sqlite at all, not at all, not at all, not at all, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := storeCopy(t, "--from", "sqlite:"+junk, "--to", "sqlite:"+filepath.Join(dir, "x.db")); code != exitUnreachable || !strings.Contains(errOut, "not an SQLite database") {
		t.Errorf("from a file that is no database: exit %d, stderr %q", code, errOut)
	}
}
