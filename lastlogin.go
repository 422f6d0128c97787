package apppass

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LastLoginWriter writes, in the background, the last-login updates that
// queue no event: a password's lastLogin and idle deadline as a login
// moves them (at most once a minute per password, see lastLoginEvery).
// Authenticate then answers without waiting for a write of the store,
// which matters where most logins are of passwords not used for a minute:
// with a million stored, nearly every cold login.
//
// An update that queues an event (first use, new IP) is never left to
// it: that one is stored before authenticate answers, so the event is
// never lost. At most capacity updates wait; past that an update is
// dropped, and the password's next login records it again. The idle
// deadline may lag a login by as long as an update waits.
type LastLoginWriter struct {
	store PasswordStore
	queue chan lastLoginUpdate
	wg    sync.WaitGroup
}

type lastLoginUpdate struct {
	uuid         string
	login        LastLogin
	idleDeadline *time.Time
}

// lastLoginWorkers write at once: enough to fill the store's batches.
const lastLoginWorkers = 4

// NewLastLoginWriter returns a writer holding at most capacity updates.
func NewLastLoginWriter(store PasswordStore, capacity int) *LastLoginWriter {
	return &LastLoginWriter{store: store, queue: make(chan lastLoginUpdate, capacity)}
}

// record queues u, or drops it when the queue is full.
func (w *LastLoginWriter) record(u lastLoginUpdate) {
	select {
	case w.queue <- u:
	default:
	}
}

// Waiting is how many updates wait to be written.
func (w *LastLoginWriter) Waiting() int { return len(w.queue) }

// Run writes updates until ctx ends, then what still waits, for at most
// drain (shutdown goes on without the rest).
func (w *LastLoginWriter) Run(ctx context.Context, drain time.Duration, logger *slog.Logger) {
	write := func(wctx context.Context, u lastLoginUpdate) {
		cctx, cancel := context.WithTimeout(wctx, 10*time.Second)
		defer cancel()
		if _, err := w.store.RecordLogin(cctx, u.uuid, u.login, u.idleDeadline, nil); err != nil && wctx.Err() == nil {
			logger.Debug("recording a last login failed", "password", u.uuid, "err", err)
		}
	}
	for range lastLoginWorkers {
		w.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case u := <-w.queue:
					write(ctx, u)
				}
			}
		})
	}
	w.wg.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	for {
		select {
		case u := <-w.queue:
			write(dctx, u)
		default:
			return
		}
		if dctx.Err() != nil {
			return
		}
	}
}
