package storage

import (
	"context"
	"fmt"

	"github.com/apppass/apppass"
)

// Seed bulk-inserts passwords for benchmarks and load tests: many per
// round trip, with no created events (seeded data is not news). Each
// owner's passwords take slots from 0, so owners must be new and hold at
// most the per-user limit.
func (s *Store) Seed(ctx context.Context, ps []apppass.Password) error {
	next := map[apppass.User]int{}
	docs := make([]any, 0, len(ps))
	digests := make([]any, 0, len(ps))
	for i := range ps {
		p := &ps[i]
		slot := next[p.Owner]
		next[p.Owner]++
		digests = append(digests, digestDoc{Digest: p.Digest, UUID: p.UUID})
		docs = append(docs, passwordDoc{
			UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID, Login: p.Owner.Login,
			LoginKey: apppass.LoginKey(p.Owner.Login), AppScope: p.AppScope, Name: p.Name, Created: p.Created,
			Digest: p.Digest, KeyID: p.KeyID, Slot: slotKey(p.Owner, slot), Outbox: map[string]eventDoc{},
			KnownIPs: p.KnownIPs,
		})
		if l := p.LastLogin; l != nil {
			d := docs[len(docs)-1].(passwordDoc)
			d.LastLogin = &lastLoginDoc{Time: l.Time, IP: l.IP, Device: l.Device, UserAgent: l.UserAgent}
			docs[len(docs)-1] = d
		}
	}
	for start := 0; start < len(docs); start += 1000 {
		end := min(start+1000, len(docs))
		if _, err := s.digests.InsertMany(ctx, digests[start:end]); err != nil {
			return fmt.Errorf("seeding digests %d-%d: %w", start, end, wrap(err))
		}
		if _, err := s.passwords.InsertMany(ctx, docs[start:end]); err != nil {
			return fmt.Errorf("seeding passwords %d-%d: %w", start, end, wrap(err))
		}
	}
	return nil
}
