package nats_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apppass/apppass/events/nats"
)

// TestBacklog: readers get the last count, however many read, and the
// count is taken again in the background.
func TestBacklog(t *testing.T) {
	var counted, value atomic.Int64
	b := nats.NewBacklog(func(context.Context) (int64, error) {
		counted.Add(1)
		return value.Load(), nil
	}, 20*time.Millisecond)
	if _, err := b.Pending(context.Background()); !errors.Is(err, nats.ErrNotCounted) {
		t.Fatalf("Pending before the first count = %v, want ErrNotCounted", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	value.Store(7)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := b.Pending(ctx); err == nil && n == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backlog never counted 7")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := counted.Load()
	for range 10000 {
		_, _ = b.Pending(ctx)
	}
	if counted.Load()-before > 100 {
		t.Errorf("10,000 reads counted %d times", counted.Load()-before)
	}
}
