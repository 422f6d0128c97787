package apppass

import (
	"context"
	"log/slog"
	"time"
)

// SweepExpired revokes every active password whose expiry or idle deadline
// has passed, with reason expired or idle, each with its revoked event.
// Several replicas may sweep at once: a password revoked by another is
// simply skipped.
func (s *Service) SweepExpired(ctx context.Context) (int, error) {
	const batch = 100
	now := s.now()
	revoked := 0
	for {
		ps, err := s.Store.Expired(ctx, now, batch)
		if err != nil {
			return revoked, err
		}
		for i := range ps {
			p := &ps[i]
			reason := ReasonIdle
			if p.Expires != nil && !now.Before(*p.Expires) {
				reason = ReasonExpired
			}
			switch err := s.revoke(ctx, p.Owner, p.UUID, reason); {
			case err == nil:
				revoked++
			case KindOf(err) != KindNotFound:
				return revoked, err
			}
		}
		if len(ps) < batch {
			return revoked, nil
		}
	}
}

// RunSweeper sweeps expired passwords and forgets stale throttle tallies
// every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.SweepExpired(ctx); err != nil && ctx.Err() == nil {
			logger.Warn("sweeping expired app passwords failed", "err", err)
		} else if n > 0 {
			logger.Info("revoked expired app passwords", "count", n)
		}
		if s.Throttle != nil {
			p := s.Throttle.Policy
			if err := s.Throttle.Store.PurgeFailures(ctx, s.now().Add(-p.Window-p.MaxBlock)); err != nil && ctx.Err() == nil {
				logger.Warn("purging login failure tallies failed", "err", err)
			}
		}
	}
}
