package sqlite

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestQueriesUseIndexes: none of the queries in queries.go scans a table
// (but the outbox, which holds only what waits for NATS). This is what
// keeps authenticate and the UI flat from 1,000 to 1,000,000 passwords.
func TestQueriesUseIndexes(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "apppass.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	queries := map[string]string{
		"FindByDigest": qFindByDigest, "List": qList, "CountActive": qCountActive, "ListContext": qListContext,
		"Expired": qExpired, "IdleExpired": qIdleExpired, "RevokeRow": qRevokeRow, "LoginRow": qLoginRow, "ClaimRow": qClaimRow, "Claim": qClaim, "Forget": qForget,
		"Export": qExport, "PendingIDs": qPendingIDs, "PendingOf": qPendingOf, "Failures": qFailures,
		"PurgeFailures": qPurgeFailures, "ClaimWebhooks": qClaimWebhooks,
		"MarkPublished": qMarkPublished, "PurgePublished": qPurgePublished,
	}
	for name, q := range queries {
		rows, err := s.read.Query(`EXPLAIN QUERY PLAN `+q, placeholders(q)...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN ") && !strings.HasPrefix(step, "SCAN o ") && !strings.HasPrefix(step, "SCAN json_each") {
				t.Errorf("%s scans: %s", name, strings.Join(plan, " | "))
			}
		}
		t.Logf("%s: %s", name, strings.Join(plan, " | "))
	}
}

// placeholders returns an argument for each parameter of q (? or ?N).
func placeholders(q string) []any {
	n := strings.Count(q, "?")
	for i := 9; i > 0; i-- {
		if strings.Contains(q, "?"+strconv.Itoa(i)) {
			n = i
			break
		}
	}
	args := make([]any, n)
	for i := range args {
		args[i] = "1"
	}
	return args
}
