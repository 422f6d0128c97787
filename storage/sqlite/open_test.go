package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage/sqlite"
)

// TestOpenRefuses: a file that is not apppass's store, a schema from a
// newer release and a directory that cannot be written each stop Open
// with one line naming the file and saying what to do, and change
// nothing.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("this is no database\n", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	raw, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	newer := filepath.Join(dir, "newer.db")
	open(t, newer, sqlite.Options{}).Close()
	raw, err = sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	for _, tc := range []struct {
		what, path string
		want       []string
	}{
		{"a file that is no database", junk, []string{junk, "is not an SQLite database", "move it away"}},
		{"another program's database", foreign, []string{foreign, "another program", "move it away"}},
		{"a schema from a newer release", newer, []string{newer, "schema version 99, newer than this apppassd knows (" + fmt.Sprint(len(sqlite.Migrations)) + ")", "run the newer apppassd"}},
		{"a directory nothing can be written in", filepath.Join(testenv.ReadOnlyDir(t), "apppass.db"), []string{"apppass.db", "writable"}},
	} {
		before, _ := os.ReadFile(tc.path)
		s, err := sqlite.Open(tc.path, sqlite.Options{Exclusive: true})
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", tc.what)
			continue
		}
		msg := err.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q does not say %q", tc.what, msg, w)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: error spans lines: %q", tc.what, msg)
		}
		if after, _ := os.ReadFile(tc.path); string(after) != string(before) {
			t.Errorf("%s: Open changed the file", tc.what)
		}
	}
}

// TestExclusive: an exclusive Open keeps other exclusive ones out (a
// second apppassd, store copy) until it closes; plain handles may join.
func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apppass.db")
	first := open(t, path, sqlite.Options{Exclusive: true})
	_, err := sqlite.Open(path, sqlite.Options{Exclusive: true})
	if !errors.Is(err, sqlite.ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second exclusive Open = %v, want ErrInUse naming this pid", err)
	}
	open(t, path, sqlite.Options{}).Close()
	first.Close()
	open(t, path, sqlite.Options{Exclusive: true}).Close()
}

// TestFullDisk: when the disk is full, writes fail as unavailable (-32050
// at the edge) with nothing half-written, reads go on, and writes work
// again once there is room, without reopening the store.
func TestFullDisk(t *testing.T) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		t.Run(sync, func(t *testing.T) {
			dir, fill := testenv.SmallDisk(t, 2<<20)
			s := open(t, filepath.Join(dir, "apppass.db"), sqlite.Options{Synchronous: sync})
			ctx := context.Background()
			owner := apppass.User{ContextID: 1, UserID: 2, Login: "full@example.com"}
			add := func(i int) (*apppass.Password, error) {
				p := &apppass.Password{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Owner: owner, AppScope: "mail",
					Name: strings.Repeat("n", 100), Created: time.Now().UTC().Truncate(time.Millisecond),
					Digest: "digest-" + testenv.RandomHex(16), KeyID: "k"}
				ev := apppass.Event{ID: testenv.RandomHex(12), Type: apppass.EventCreated, Timestamp: p.Created,
					Data: apppass.EventData{UUID: p.UUID, Name: p.Name}}
				_, err := s.Insert(ctx, p, ev, 1_000_000, nil)
				return p, err
			}
			kept, err := add(0)
			if err != nil {
				t.Fatal(err)
			}
			free := fill()
			var failed *apppass.Password
			stored := 1
			for i := 1; i < 20000 && failed == nil; i++ {
				p, err := add(i)
				switch {
				case err == nil:
					stored++
				case apppass.KindOf(err) == apppass.KindUnavailable:
					failed = p
				default:
					t.Fatalf("insert %d on a full disk: %v (kind %d), want KindUnavailable", i, err, apppass.KindOf(err))
				}
			}
			if failed == nil {
				t.Fatal("20,000 inserts on a full disk all succeeded")
			}
			if _, err := s.FindByDigest(ctx, failed.Digest); !errors.Is(err, apppass.ErrRejected) {
				t.Errorf("the failed insert is there: %v", err)
			}
			if _, err := s.FindByDigest(ctx, kept.Digest); err != nil {
				t.Errorf("a read on a full disk: %v", err)
			}
			if err := s.Ping(ctx); apppass.KindOf(err) != apppass.KindUnavailable {
				t.Errorf("Ping on a full disk = %v, want unavailable", err)
			}
			if n, err := s.PendingCount(ctx); err != nil || n != int64(stored) {
				t.Errorf("PendingCount = %d, %v; want %d (one created event per stored password)", n, err, stored)
			}

			free()
			if _, err := add(30000); err != nil {
				t.Fatalf("insert once there is room: %v", err)
			}
			// Ping stays unavailable a while after the last failure, so
			// /readyz does not flap on a disk where some writes fit.
			if sync == "FULL" {
				deadline := time.Now().Add(20 * time.Second)
				for s.Ping(ctx) != nil {
					if time.Now().After(deadline) {
						t.Fatalf("Ping still fails 20 s after there is room: %v", s.Ping(ctx))
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			if n, err := s.CountPasswords(ctx); err != nil || n != int64(stored+1) {
				t.Errorf("CountPasswords = %d, %v; want %d", n, err, stored+1)
			}
			t.Logf("%d inserts fit before the disk was full", stored)
		})
	}
}

// TestMigratesOutbox: a file of schema version 1 (events deleted at their
// ack) opens at the newest version with its pending events still pending,
// and they are marked and purged as any others.
func TestMigratesOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(sqlite.Migrations[0]); err != nil {
		t.Fatal(err)
	}
	ev := apppass.Event{ID: "0b0c6c1e-6e2a-4d3c-9a57-3c1f2a9b8d01", Type: apppass.EventCreated, Timestamp: time.Now().UTC().Truncate(time.Millisecond)}
	ev.Data.UUID = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO outbox (password_uuid, event_id, event) VALUES (?, ?, ?)`, ev.Data.UUID, ev.ID, string(body)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(fmt.Sprintf(`PRAGMA application_id = %d; PRAGMA user_version = 1`, sqlite.ApplicationID)); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	s := open(t, path, sqlite.Options{})
	defer s.Close()
	ctx := context.Background()
	got, err := s.Pending(ctx, 10, "")
	if err != nil || len(got) != 1 || len(got[0].Events) != 1 || got[0].Events[0].ID != ev.ID {
		t.Fatalf("Pending after the migration = %+v, %v; want the one event", got, err)
	}
	if err := s.MarkPublished(ctx, ev.Data.UUID, "", got[0].Events); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PendingCount(ctx); err != nil || n != 0 {
		t.Fatalf("PendingCount after the mark = %d, %v; want 0", n, err)
	}
	if n, err := s.PurgePublished(ctx, time.Now().Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("PurgePublished = %d, %v; want 1", n, err)
	}
	var version int
	raw, err = sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != len(sqlite.Migrations) {
		t.Fatalf("user_version = %d, %v; want %d", version, err, len(sqlite.Migrations))
	}
}
