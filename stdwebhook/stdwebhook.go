// Package stdwebhook signs and verifies HTTP requests the Standard Webhooks
// way (https://www.standardwebhooks.com, spec 1.0.0, symmetric scheme):
//
//   - webhook-id: the message id; it stays the same across retries;
//   - webhook-timestamp: the attempt's time, integer Unix seconds;
//   - webhook-signature: space-separated "v1,<base64>" entries, each the
//     HMAC-SHA256 of "<id>.<timestamp>.<body>" under one secret.
//
// Secrets are written "whsec_<base64>"; the key is the decoded part. The
// package has no dependencies, so webhook receivers written in Go can use
// it to verify what apppassd sends.
package stdwebhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names, as the spec writes them (HTTP header names are
// case-insensitive).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix marks a symmetric signing secret.
const SecretPrefix = "whsec_"

// Secret sizes the spec allows: at least 24 bytes, at most 512 bits.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
)

// DefaultTolerance is how far webhook-timestamp may be from the receiver's
// clock, either way: the spec's (and every reference library's) 5 minutes.
const DefaultTolerance = 5 * time.Minute

// MaxIDLength bounds webhook-id; real ids are a few dozen characters.
const MaxIDLength = 256

// Secret is a signing key: the decoded part of "whsec_…".
type Secret []byte

// ParseSecret decodes "whsec_<base64>". The base64 may be padded or not.
func ParseSecret(s string) (Secret, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return nil, errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(rest)
	}
	if err != nil {
		return nil, errors.New(`the part after "whsec_" must be base64`)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, fmt.Errorf("must decode to %d to %d bytes, not %d", MinSecretBytes, MaxSecretBytes, len(key))
	}
	return Secret(key), nil
}

// GenerateSecret returns a new random secret of 32 bytes as "whsec_…".
func GenerateSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// String writes the secret back as "whsec_…".
func (s Secret) String() string { return SecretPrefix + base64.StdEncoding.EncodeToString(s) }

// Sign returns the "v1,<base64>" signature of one message under secret.
func Sign(secret Secret, id string, timestamp int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(secret, id, timestamp, body))
}

func mac(secret Secret, id string, timestamp int64, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SetHeaders sets the three webhook headers for one attempt through set
// (an http.Header's Set), signed with every secret given (several during a
// rotation). Taking the setter keeps net/http out of this package, which
// the domain imports to check secrets.
func SetHeaders(set func(key, value string), id string, at time.Time, body []byte, secrets ...Secret) {
	ts := at.Unix()
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		sigs = append(sigs, Sign(s, id, ts, body))
	}
	set(HeaderID, id)
	set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	set(HeaderSignature, strings.Join(sigs, " "))
}

// Verification errors. Every one means: do not trust the request.
var (
	ErrMissingHeaders   = errors.New("webhook-id, webhook-timestamp and webhook-signature are required")
	ErrInvalidID        = fmt.Errorf("webhook-id must be 1 to %d printable ASCII characters without '.'", MaxIDLength)
	ErrInvalidTimestamp = errors.New("webhook-timestamp must be integer Unix seconds")
	ErrStale            = errors.New("webhook-timestamp is outside the tolerance")
	ErrNoSignature      = errors.New("no webhook-signature entry matches")
)

// Verifier checks incoming requests against one or more secrets.
type Verifier struct {
	Secrets []Secret
	// Tolerance bounds the distance of webhook-timestamp from now, either
	// way; zero means DefaultTolerance.
	Tolerance time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks the headers of a request, read through get (an
// http.Header's Get), against its raw body and returns the webhook-id. It compares signatures in constant time, and it checks
// the signature before the timestamp, so an unsigned request learns
// nothing about the clock.
func (v *Verifier) Verify(get func(key string) string, body []byte) (string, error) {
	id, tsText, sigs := get(HeaderID), get(HeaderTimestamp), get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	if !validID(id) {
		return "", ErrInvalidID
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || ts < 0 || strings.TrimLeft(tsText, "0123456789") != "" {
		return "", ErrInvalidTimestamp
	}
	matched := false
	for _, s := range v.Secrets {
		want := mac(s, id, ts, body)
		for entry := range strings.FieldsSeq(sigs) {
			version, b64, ok := strings.Cut(entry, ",")
			if !ok || version != "v1" {
				continue // another scheme (v1a) or garbage: not ours to check
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				matched = true
			}
		}
	}
	if !matched {
		return "", ErrNoSignature
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tolerance := v.Tolerance
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	at := time.Unix(ts, 0)
	if d := now().Sub(at); d > tolerance || d < -tolerance {
		return "", ErrStale
	}
	return id, nil
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '.' {
			return false
		}
	}
	return true
}
