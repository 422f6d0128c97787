package apppass

import (
	"sync"
	"sync/atomic"
	"time"
)

// AuthCache remembers recent successful authentications by digest (never
// by password), so clients that reconnect every minute cost no storage
// round trip. Revocations evict entries: locally at once, on other
// replicas through the revoked events they subscribe to. While that
// subscription is down the cache is not trusted, because evictions may be
// missed; SetTrusted(true) after reconnecting also empties it.
type AuthCache struct {
	ttl     time.Duration
	trusted atomic.Bool
	// hits and misses count lookups, for the metrics; a lookup while the
	// cache is not trusted is a miss (it goes to storage).
	hits, misses atomic.Uint64

	mu       sync.RWMutex
	byDigest map[string]cacheEntry
	byUUID   map[string]string // uuid -> digest
	sweptAt  time.Time         // when add last dropped expired entries
	// evictions counts evictions, so that a password read from storage
	// before a concurrent revocation is not cached after it.
	evictions uint64
}

type cacheEntry struct {
	p     Password
	until time.Time
}

// NewAuthCache returns a cache whose entries live for ttl. It starts
// untrusted: call SetTrusted once evictions are being received.
func NewAuthCache(ttl time.Duration) *AuthCache {
	return &AuthCache{ttl: ttl, byDigest: map[string]cacheEntry{}, byUUID: map[string]string{}}
}

// SetTrusted turns the cache on or off. Either way it is emptied, because
// evictions sent while it was off were not seen.
func (c *AuthCache) SetTrusted(trusted bool) {
	c.mu.Lock()
	clear(c.byDigest)
	clear(c.byUUID)
	c.evictions++
	c.trusted.Store(trusted)
	c.mu.Unlock()
}

// Trusted reports whether the cache is in use.
func (c *AuthCache) Trusted() bool { return c.trusted.Load() }

// generation is taken before a storage read and handed to add.
func (c *AuthCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.evictions
}

func (c *AuthCache) get(digest string, now time.Time) (Password, bool) {
	if !c.trusted.Load() {
		c.misses.Add(1)
		return Password{}, false
	}
	c.mu.RLock()
	e, ok := c.byDigest[digest]
	c.mu.RUnlock()
	if !ok || now.After(e.until) {
		c.misses.Add(1)
		return Password{}, false
	}
	c.hits.Add(1)
	return e.p, true
}

// Stats returns how many lookups the cache answered (hits) and how many
// went on to storage (misses) since it was made.
func (c *AuthCache) Stats() (hits, misses uint64) {
	return c.hits.Load(), c.misses.Load()
}

// add caches p, read from storage at generation gen, unless an eviction
// happened since: it might have been p's.
func (c *AuthCache) add(p Password, now time.Time, gen uint64) {
	if !c.trusted.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.evictions != gen {
		return
	}
	c.byDigest[p.Digest] = cacheEntry{p: p, until: now.Add(c.ttl)}
	c.byUUID[p.UUID] = p.Digest
	// Expired entries are dropped here, at most once a ttl, so the cache
	// holds the passwords used in about the last two ttls, not every
	// password used since the start.
	if now.Sub(c.sweptAt) >= c.ttl {
		for d, e := range c.byDigest {
			if now.After(e.until) {
				delete(c.byDigest, d)
				if c.byUUID[e.p.UUID] == d {
					delete(c.byUUID, e.p.UUID)
				}
			}
		}
		c.sweptAt = now
	}
}

// update replaces a cached password (after recording a login), keeping
// its expiry; an entry evicted meanwhile stays evicted.
func (c *AuthCache) update(p Password) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byDigest[p.Digest]; ok && old.p.UUID == p.UUID {
		c.byDigest[p.Digest] = cacheEntry{p: p, until: old.until}
	}
}

// EvictUUID drops the entry of a revoked password.
func (c *AuthCache) EvictUUID(uuid string) {
	c.mu.Lock()
	if d, ok := c.byUUID[uuid]; ok {
		delete(c.byDigest, d)
		delete(c.byUUID, uuid)
	}
	c.evictions++
	c.mu.Unlock()
}

// Len is the number of entries.
func (c *AuthCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byDigest)
}
