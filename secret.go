package apppass

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/url"
	"strings"
	"sync"
)

// passwordLetters is the length of an app password without its dashes:
// 16 letters from 26 give log2(26^16) ≈ 75 bits of entropy.
const passwordLetters = 16

// GeneratePassword returns a new app password, 16 random lowercase letters
// grouped as xxxx-xxxx-xxxx-xxxx for reading aloud and typing on a phone.
func GeneratePassword() (string, error) {
	out := make([]byte, 0, passwordLetters+3)
	buf := make([]byte, 32)
	for len(out) < passwordLetters+3 {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			// Rejection sampling: 234 = 9*26, so b%26 is uniform below it.
			if b >= 234 || len(out) == passwordLetters+3 {
				continue
			}
			if n := len(out); n == 4 || n == 9 || n == 14 {
				out = append(out, '-')
			}
			out = append(out, 'a'+b%26)
		}
	}
	return string(out), nil
}

// NormalizePassword turns what a user typed into the canonical form that is
// digested: case folded, dashes and spaces dropped. It reports false when
// the result cannot be an app password, so no lookup is wasted on it.
func NormalizePassword(typed string) ([]byte, bool) {
	if len(typed) > 64 {
		return nil, false
	}
	out := make([]byte, 0, passwordLetters)
	for i := 0; i < len(typed); i++ {
		c := typed[i]
		switch {
		case c == '-' || c == ' ':
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c < 'a' || c > 'z':
			return nil, false
		}
		if len(out) == passwordLetters {
			return nil, false
		}
		out = append(out, c)
	}
	return out, len(out) == passwordLetters
}

// Digester keys password digests with the pepper, a secret kept outside the
// database, so a stolen database alone cannot be used to test guesses.
// App passwords carry ~75 bits of server-made entropy, which makes a slow
// hash pointless; HMAC-SHA-256 keeps authenticate to one indexed lookup.
type Digester struct {
	key   []byte
	keyID string
	// macs keeps keyed HMACs for reuse: keying one costs more than the
	// digest it then makes, and five allocations.
	macs sync.Pool
}

// NewDigester builds a Digester from the pepper. The key id names the pepper
// without revealing it, so a later rotation can tell digests apart.
func NewDigester(pepper []byte) (*Digester, error) {
	if len(pepper) < 32 {
		return nil, fmt.Errorf("the pepper must be at least 32 bytes long, got %d", len(pepper))
	}
	m := hmac.New(sha256.New, pepper)
	m.Write([]byte("apppass key id"))
	return &Digester{key: pepper, keyID: hex.EncodeToString(m.Sum(nil)[:4])}, nil
}

// KeyID identifies the pepper that made a digest.
func (d *Digester) KeyID() string { return d.keyID }

// Digest returns the keyed digest of a normalised password.
func (d *Digester) Digest(normalized []byte) string {
	m, _ := d.macs.Get().(*keyedMAC)
	if m == nil {
		m = &keyedMAC{Hash: hmac.New(sha256.New, d.key)}
	}
	m.Write(normalized)
	sum := m.Sum(m.sum[:0])
	m.Reset()
	var out [43]byte // unpadded base64 of 32 bytes
	digest := string(base64.RawStdEncoding.AppendEncode(out[:0], sum))
	d.macs.Put(m)
	return digest
}

// keyedMAC is an HMAC keyed with the pepper, with room for its sum.
type keyedMAC struct {
	hash.Hash
	sum [sha256.Size]byte
}

// SameSecret compares two secrets in constant time.
func SameSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// RedactURL returns rawURL with the password of its user info replaced by
// "***" (nats://relay:***@host:4222), for logs and error messages; a URL
// without one, or that does not parse, comes back as it is.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	if _, has := u.User.Password(); !has {
		return rawURL
	}
	u.User = url.UserPassword(u.User.Username(), "***")
	return strings.Replace(u.String(), "%2A%2A%2A", "***", 1)
}

// RedactIn returns text with rawURL's password, wherever it appears (the
// URL itself included), replaced by "***": for errors of libraries that
// may quote the URL they were given.
func RedactIn(text, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return text
	}
	password, has := u.User.Password()
	if !has || password == "" {
		return text
	}
	text = strings.ReplaceAll(text, rawURL, RedactURL(rawURL))
	text = strings.ReplaceAll(text, password, "***")
	return strings.ReplaceAll(text, url.QueryEscape(password), "***")
}
