package apppass

import (
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
