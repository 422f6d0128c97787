package apppass

import (
	"strings"
	"testing"
	"time"
)

// Micro-benchmarks of the authenticate hot path's pure parts.

func BenchmarkNormalizeAndDigest(b *testing.B) {
	d, _ := NewDigester([]byte(strings.Repeat("p", 32)))
	b.ReportAllocs()
	for b.Loop() {
		n, _ := NormalizePassword("ABCD-efgh ijkl-MNOP")
		_ = d.Digest(n)
	}
}

func BenchmarkGeneratePassword(b *testing.B) {
	for b.Loop() {
		_, _ = GeneratePassword()
	}
}

func BenchmarkVerifyUserToken(b *testing.B) {
	tokens, _ := NewUserTokens([]byte(strings.Repeat("k", 32)))
	now := time.Now()
	token := tokens.Mint(User{ContextID: 1, UserID: 2, Login: "a@example.com"}, time.Hour, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tokens.Verify(token, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheGet(b *testing.B) {
	c := NewAuthCache(time.Hour)
	c.SetTrusted(true)
	now := time.Now()
	c.add(Password{UUID: "u", Digest: "d"}, now, c.generation())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := c.get("d", now); !ok {
				b.Fatal("miss")
			}
		}
	})
}
