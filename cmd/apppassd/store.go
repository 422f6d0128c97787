package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/storage/mongo"
	"github.com/apppass/apppass/storage/sqlite"
)

// openStore opens the store (closed when serve returns).
func (d *daemon) openStore(ctx context.Context) error {
	store, shown, err := openStore(ctx, d.cfg, d.keys.digester, d.logger)
	if err != nil {
		return err
	}
	d.store, d.shown = store, shown
	d.onClose(func() { store.Close() })
	return nil
}

// storeShown names the store in messages.
type storeShown struct{ name, detail string }

// openStore opens the embedded SQLite store in the data dir, or the
// configured MongoDB, and checks that its passwords were digested with
// this pepper.
func openStore(ctx context.Context, cfg *config.Config, digester *apppass.Digester, logger *slog.Logger) (apppass.Store, storeShown, error) {
	var store apppass.Store
	var shown storeShown
	if cfg.EmbeddedStore() {
		path := cfg.DataFile(datadir.StoreFile)
		s, err := sqlite.Open(path, sqlite.Options{Exclusive: true, Synchronous: cfg.SQLiteSynchronous})
		if err != nil {
			return nil, shown, err
		}
		store, shown = s, storeShown{name: "the SQLite store", detail: "sqlite " + path}
	} else {
		s, err := openMongo(ctx, cfg.MongoURI, cfg.MongoDatabase, logger)
		if err != nil {
			return nil, shown, err
		}
		store, shown = s, storeShown{name: "MongoDB", detail: "MongoDB database " + cfg.MongoDatabase}
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := store.BindDigestKey(bctx, digester.KeyID()); err != nil {
		store.Close()
		if errors.Is(err, apppass.ErrDigestKeyMismatch) {
			stored, _ := store.DigestKeyID(bctx)
			return nil, shown, fmt.Errorf("%s holds passwords digested with another pepper (key id %s; this pepper's is %s): set APPPASS_PEPPER to the pepper it was created with", shown.detail, stored, digester.KeyID())
		}
		return nil, shown, err
	}
	return store, shown, nil
}

// openMongo connects to MongoDB, retrying for a while: in a compose file
// the database may come up after us.
func openMongo(ctx context.Context, uri, db string, logger *slog.Logger) (*mongo.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		store, err := mongo.Open(octx, uri, db)
		cancel()
		if err == nil {
			return store, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		logger.Warn("MongoDB not reachable yet, retrying", "err", err)
		time.Sleep(time.Second)
	}
}

// heartbeatEvery is how often an apppassd on MongoDB says it is there,
// for `apppass store copy`, which refuses to write into a live database.
const heartbeatEvery = 10 * time.Second

func heartbeat(ctx context.Context, s *mongo.Store, id string, logger *slog.Logger) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
		if err := s.Heartbeat(hctx, id, 3*heartbeatEvery); err != nil && ctx.Err() == nil {
			logger.Debug("heartbeat to MongoDB failed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.Leave(lctx, id)
			cancel()
			return
		case <-t.C:
		}
	}
}
