package apppass

import (
	"regexp"
	"strings"
	"testing"
)

var passwordShape = regexp.MustCompile(`^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$`)

func TestGeneratePasswordShapeAndSpread(t *testing.T) {
	seen := map[string]bool{}
	letters := map[byte]int{}
	for range 2000 {
		p, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if !passwordShape.MatchString(p) {
			t.Fatalf("password %q does not look like xxxx-xxxx-xxxx-xxxx", p)
		}
		if seen[p] {
			t.Fatalf("password %q generated twice", p)
		}
		seen[p] = true
		for i := range len(p) {
			letters[p[i]]++
		}
	}
	// 32,000 letters over 26: every letter must appear, none wildly often.
	for c := byte('a'); c <= 'z'; c++ {
		if n := letters[c]; n < 800 || n > 1700 {
			t.Errorf("letter %c appeared %d times in 32000, expected about 1230", c, n)
		}
	}
}

func TestNormalizePassword(t *testing.T) {
	for _, tc := range []struct {
		typed, want string
		ok          bool
	}{
		{"abcd-efgh-ijkl-mnop", "abcdefghijklmnop", true},
		{"ABCD-EFGH-IJKL-MNOP", "abcdefghijklmnop", true},
		{"abcdefghijklmnop", "abcdefghijklmnop", true},
		{"abcd efgh ijkl mnop", "abcdefghijklmnop", true},
		{" aBcD-eFgH ijkl--mnop ", "abcdefghijklmnop", true},
		{"abcd-efgh-ijkl-mno", "", false},   // too short
		{"abcd-efgh-ijkl-mnopq", "", false}, // too long
		{"abcd-efgh-ijkl-mno1", "", false},  // digit
		{"abcd-efgh-ijkl-mnoé", "", false},  // non-ASCII
		{"", "", false},
		{strings.Repeat("-", 100), "", false},
	} {
		got, ok := NormalizePassword(tc.typed)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("NormalizePassword(%q) = %q, %v; want %q, %v", tc.typed, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDigester(t *testing.T) {
	if _, err := NewDigester([]byte("short")); err == nil {
		t.Fatal("a pepper under 32 bytes was accepted")
	}
	d1, _ := NewDigester([]byte(strings.Repeat("a", 32)))
	d2, _ := NewDigester([]byte(strings.Repeat("b", 32)))
	pw := []byte("abcdefghijklmnop")
	if d1.Digest(pw) != d1.Digest(pw) {
		t.Fatal("digest is not deterministic")
	}
	if d1.Digest(pw) == d2.Digest(pw) {
		t.Fatal("digest does not depend on the pepper")
	}
	if d1.Digest(pw) == d1.Digest([]byte("abcdefghijklmnoq")) {
		t.Fatal("different passwords share a digest")
	}
	if d1.KeyID() == d2.KeyID() || len(d1.KeyID()) != 8 {
		t.Fatalf("key ids %q %q must be 8 hex digits and differ", d1.KeyID(), d2.KeyID())
	}
	if strings.Contains(d1.Digest(pw), string(pw)) {
		t.Fatal("digest contains the password")
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"  My phone ", "My phone", true},
		{"Ü" + strings.Repeat("x", 127), "Ü" + strings.Repeat("x", 127), true},
		{strings.Repeat("x", 129), "", false},
		{"   ", "", false},
		{"tab\there", "", false},
		{"nul\x00", "", false},
		{"bad\xffutf8", "", false},
	} {
		got, err := cleanName(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("cleanName(%q) = %q, %v", tc.in, got, err)
		}
		if err != nil && KindOf(err) != KindInvalid {
			t.Errorf("cleanName(%q) error kind %v, want invalid", tc.in, KindOf(err))
		}
	}
}

func TestUUIDs(t *testing.T) {
	u := newUUID()
	if !validUUID(u) || u[14] != '4' {
		t.Fatalf("newUUID() = %q is not a v4 UUID", u)
	}
	for _, bad := range []string{"", "x", strings.ToUpper(u), u + "0", strings.Replace(u, "-", "x", 1)} {
		if validUUID(bad) {
			t.Errorf("validUUID(%q) = true", bad)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://relay:s3cret@nats.example:4222":         "nats://relay:***@nats.example:4222",
		"mongodb://app:p%40ss@db1,db2/apppass?ssl=true": "mongodb://app:***@db1,db2/apppass?ssl=true",
		"nats://token@nats.example:4222":                "nats://token@nats.example:4222",
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"not a url at all":                              "not a url at all",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	uri := "mongodb://app:p%40ss@db1/apppass"
	text := "error parsing uri " + uri + ": password p@ss, escaped p%40ss"
	if got := RedactIn(text, uri); strings.Contains(got, "p@ss") || strings.Contains(got, "p%40ss") {
		t.Errorf("RedactIn left the password in %q", got)
	}
}
