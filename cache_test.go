package apppass

import (
	"fmt"
	"testing"
	"time"
)

func TestAuthCacheStats(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewAuthCache(time.Minute)
	p := Password{UUID: "u1", Digest: "d1"}
	c.get("d1", now) // untrusted: a miss
	c.SetTrusted(true)
	c.add(p, now, c.generation())
	c.get("d1", now)                    // hit
	c.get("d1", now.Add(2*time.Minute)) // expired: a miss
	c.get("d2", now)                    // unknown: a miss
	if hits, misses := c.Stats(); hits != 1 || misses != 3 {
		t.Fatalf("hits %d misses %d, want 1 and 3", hits, misses)
	}
}

// TestAuthCacheDropsExpired: entries do not outlive their ttl by much, so
// a stream of logins with ever other passwords does not grow the cache.
func TestAuthCacheDropsExpired(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewAuthCache(time.Minute)
	c.SetTrusted(true)
	for i := range 1000 {
		at := now.Add(time.Duration(i) * time.Second)
		c.add(Password{UUID: fmt.Sprint("u", i), Digest: fmt.Sprint("d", i)}, at, c.generation())
		if n := c.Len(); n > 121 {
			t.Fatalf("after %d s: %d entries, want at most the last two minutes' 121", i, n)
		}
	}
	if c.Len() < 60 {
		t.Fatalf("%d entries: live ones were dropped", c.Len())
	}
	last := now.Add(999 * time.Second)
	if _, ok := c.get("d999", last); !ok {
		t.Fatal("the newest entry is gone")
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.byUUID) != len(c.byDigest) {
		t.Fatalf("byUUID %d entries, byDigest %d", len(c.byUUID), len(c.byDigest))
	}
}
