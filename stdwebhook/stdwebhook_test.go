package stdwebhook

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The published Standard Webhooks test vector: a receiver's library must
// accept what we sign, so we must reproduce it byte for byte.
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSpecVector(t *testing.T) {
	s, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Sign(s, vectorID, vectorTS, []byte(vectorBody)); got != vectorSig {
		t.Fatalf("Sign = %s, want %s", got, vectorSig)
	}
	if s.String() != vectorSecret {
		t.Fatalf("String = %s", s.String())
	}
	v := &Verifier{Secrets: []Secret{s}, Now: func() time.Time { return time.Unix(vectorTS+10, 0) }}
	h := http.Header{}
	h.Set(HeaderID, vectorID)
	h.Set(HeaderTimestamp, "1614265330")
	// Another scheme's entry and a wrong v1 entry come first: one match is enough.
	h.Set(HeaderSignature, "v1a,aGVsbG8= v1,bm9wZQ== "+vectorSig)
	id, err := v.Verify(h.Get, []byte(vectorBody))
	if err != nil || id != vectorID {
		t.Fatalf("Verify = %q, %v", id, err)
	}
}

func TestParseSecret(t *testing.T) {
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!", "whsec_c2hvcnQ=",
		"whsec_" + strings.Repeat("QUFB", 30)} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
		}
	}
	g := GenerateSecret()
	if s, err := ParseSecret(g); err != nil || len(s) != 32 {
		t.Fatalf("generated %q: %v", g, err)
	}
	// Unpadded base64 is accepted too.
	if _, err := ParseSecret(strings.TrimRight(GenerateSecret(), "=")); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFailures(t *testing.T) {
	s, _ := ParseSecret(GenerateSecret())
	other, _ := ParseSecret(GenerateSecret())
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"type":"user.deleted"}`)
	v := &Verifier{Secrets: []Secret{s}, Now: func() time.Time { return now }}
	signed := func(id string, at time.Time, b []byte, secrets ...Secret) http.Header {
		h := http.Header{}
		SetHeaders(h.Set, id, at, b, secrets...)
		return h
	}
	if _, err := v.Verify(signed("msg_1", now, body, other, s).Get, body); err != nil {
		t.Fatalf("rotation (two signatures): %v", err)
	}
	cases := map[string]struct {
		h    http.Header
		body []byte
		want error
	}{
		"wrong secret":    {signed("msg_1", now, body, other), body, ErrNoSignature},
		"tampered body":   {signed("msg_1", now, body, s), []byte(`{"type":"context.deleted"}`), ErrNoSignature},
		"too old":         {signed("msg_1", now.Add(-6*time.Minute), body, s), body, ErrStale},
		"from the future": {signed("msg_1", now.Add(6*time.Minute), body, s), body, ErrStale},
		"no headers":      {http.Header{}, body, ErrMissingHeaders},
		"dot in id":       {signed("a.b", now, body, s), body, ErrInvalidID},
	}
	h := signed("msg_1", now, body, s)
	h.Set(HeaderTimestamp, "+1700000000")
	cases["signed timestamp"] = struct {
		h    http.Header
		body []byte
		want error
	}{h, body, ErrInvalidTimestamp}
	h = signed("msg_1", now, body, s)
	h.Set(HeaderID, "msg_2")
	cases["other id"] = struct {
		h    http.Header
		body []byte
		want error
	}{h, body, ErrNoSignature}
	for name, c := range cases {
		if _, err := v.Verify(c.h.Get, c.body); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}
