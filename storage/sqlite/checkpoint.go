package sqlite

import (
	"database/sql"
	"time"
)

// checkpointer copies the WAL back into the database file, on a
// connection of its own, every checkpointEvery. SQLite would otherwise do
// it inside the COMMIT that crosses 1,000 WAL pages, holding up every
// write of that moment while it copies and syncs (the tail of the UI's
// latency, with a large file). A PASSIVE checkpoint runs beside the
// writer and the readers and waits for neither; the writer starts the
// WAL over once a checkpoint has copied all of it.
type checkpointer struct {
	db   *sql.DB
	quit chan struct{}
	done chan struct{}
}

const checkpointEvery = 100 * time.Millisecond

func startCheckpointer(path string) (*checkpointer, error) {
	db, err := sql.Open("sqlite", dsn(path, "NORMAL", false))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	c := &checkpointer{db: db, quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		// Errors (busy, a full disk) are for the next tick to retry: the
		// WAL keeps every committed write meanwhile.
		_, _ = c.db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
	}
}

func (c *checkpointer) close() error {
	close(c.quit)
	<-c.done
	return c.db.Close()
}
