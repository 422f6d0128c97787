package nats

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Backlog is the outbox's size as last counted: /readyz and /metrics read
// it, and it is counted again in the background every interval, so a flood
// of probes costs no query of the store each.
type Backlog struct {
	count    func(context.Context) (int64, error)
	interval time.Duration

	mu  sync.Mutex
	n   int64
	err error
}

// NewBacklog counts with count every interval once Run runs; until the
// first count it reports an error.
func NewBacklog(count func(context.Context) (int64, error), interval time.Duration) *Backlog {
	return &Backlog{count: count, interval: interval, err: ErrNotCounted}
}

// ErrNotCounted is returned by Pending until the first count.
var ErrNotCounted = errors.New("the outbox was not counted yet")

// Run counts until ctx ends.
func (b *Backlog) Run(ctx context.Context) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, b.interval+2*time.Second)
		n, err := b.count(cctx)
		cancel()
		b.mu.Lock()
		b.n, b.err = n, err
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pending returns the last count, or the error of the last attempt. It has
// the signature of a counting function, so it serves where one does.
func (b *Backlog) Pending(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.err
}
