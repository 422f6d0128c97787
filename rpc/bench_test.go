package rpc

import (
	"testing"

	"github.com/apppass/apppass"
)

// BenchmarkServiceKey measures a gateway key check (constant time over all keys).
func BenchmarkServiceKey(b *testing.B) {
	a := &Callers{ServiceKeys: []apppass.ServiceKey{{Name: "a", Role: apppass.RoleGateway, Secret: "0123456789abcdef0123"}, {Name: "b", Role: apppass.RoleAdmin, Secret: "fedcba9876543210fedc"}}}
	for b.Loop() {
		if _, err := a.Identify("fedcba9876543210fedc"); err != nil {
			b.Fatal(err)
		}
	}
}
