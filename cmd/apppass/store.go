package main

// apppass store copy: moves every password (digests, limits, last login,
// pending events), the webhook endpoints' state and the undelivered
// webhook queue from one store to another, through the storage port. It is
// how a deployment outgrows the embedded store: stop apppassd, copy the
// SQLite file into MongoDB, start apppassd on MongoDB. Users keep their
// passwords.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/storage/mongo"
	"github.com/apppass/apppass/storage/sqlite"
)

var storeCommand = &command{
	name:    "store",
	args:    "copy --from STORE --to STORE",
	summary: "copy every password and the webhook queue from one store to another",
	help: `Copies passwords (with their digests, limits, last login and pending
events), the webhook endpoints' state and the undelivered webhook queue
from --from to --to. A STORE is sqlite:PATH (the embedded store, such as
sqlite:data/apppass.db) or a MongoDB URI (mongodb://host/database; the
database defaults to apppass).

Stop apppassd first: a store that an apppassd uses is refused, as source
and as destination (the SQLite file's lock; on MongoDB, a heartbeat less
than 30 s old). So is a destination whose passwords were digested with
another pepper (the destination apppassd needs the source's APPPASS_PEPPER).
Nothing is written before these checks pass.

The copy is idempotent and resumable: run it again after an interruption,
and it copies what is missing; passwords already there are left as they
are. Throttle tallies and provisioning replay ids are not copied (they
expire within a day). Exit 0 when done, 1 when refused, 2 for a usage
error, 3 when a store cannot be opened.
`,
	run: runStore,
}

func runStore(sys *system, c *command, args []string) int {
	if len(args) == 0 || (args[0] != "copy" && !strings.HasPrefix(args[0], "-")) {
		return usageError(sys, c, "want the subcommand copy")
	}
	if args[0] == "copy" {
		args = args[1:]
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	from := fs.String("from", "", "the store to copy from: sqlite:PATH or mongodb://… (required)")
	to := fs.String("to", "", "the store to copy into: sqlite:PATH or mongodb://… (required)")
	pos, code, done := parseFlags(sys, c, fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return usageError(sys, c, "unexpected argument %q", pos[0])
	}
	if *from == "" || *to == "" {
		return usageError(sys, c, "both --from and --to are required")
	}
	src, err := parseStore(*from)
	if err != nil {
		return usageError(sys, c, "--from: %v", err)
	}
	dst, err := parseStore(*to)
	if err != nil {
		return usageError(sys, c, "--to: %v", err)
	}
	if src == dst {
		return usageError(sys, c, "--from and --to are the same store")
	}
	ctx := context.Background()
	s, err := src.open(ctx)
	if err != nil {
		return storeFailed(sys, c, "--from", err)
	}
	defer s.Close()
	d, err := dst.open(ctx)
	if err != nil {
		return storeFailed(sys, c, "--to", err)
	}
	defer d.Close()
	counts, err := copyStore(ctx, s, d, newProgress(sys.stderr, sys.stderrIsTerminal()))
	if err != nil {
		fmt.Fprintf(sys.stderr, "apppass store: %s\n", oneLine(err.Error()))
		if errors.Is(err, errRefused) {
			return exitFailed
		}
		return exitUnreachable
	}
	fmt.Fprintf(sys.stdout, "copied %d passwords (%d new, %d there already), %d pending events, %d webhook endpoint states, %d undelivered webhooks (%d new)\n",
		counts.passwords, counts.newPasswords, counts.passwords-counts.newPasswords, counts.events, counts.endpoints, counts.webhooks, counts.newWebhooks)
	return exitSuccess
}

// storeFailed reports a store that cannot be opened or is in use.
func storeFailed(sys *system, c *command, which string, err error) int {
	fmt.Fprintf(sys.stderr, "apppass %s: %s: %s\n", c.name, which, oneLine(err.Error()))
	if errors.Is(err, errRefused) || errors.Is(err, sqlite.ErrInUse) {
		return exitFailed
	}
	return exitUnreachable
}

// errRefused marks a copy refused for what the stores are.
var errRefused = errors.New("refused")

// storeURI names a store: a SQLite file or a MongoDB database.
type storeURI struct {
	sqlitePath string
	mongoURI   string
	mongoDB    string
}

func parseStore(s string) (storeURI, error) {
	if path, ok := strings.CutPrefix(s, "sqlite:"); ok {
		if path == "" {
			return storeURI{}, errors.New("sqlite: needs a file, as in sqlite:data/apppass.db")
		}
		return storeURI{sqlitePath: path}, nil
	}
	if strings.HasPrefix(s, "mongodb://") || strings.HasPrefix(s, "mongodb+srv://") {
		u, err := url.Parse(s)
		if err != nil {
			return storeURI{}, errors.New("not a MongoDB URI")
		}
		db := strings.Trim(u.Path, "/")
		if db == "" {
			db = "apppass"
		}
		return storeURI{mongoURI: s, mongoDB: db}, nil
	}
	return storeURI{}, errors.New("want sqlite:PATH or a mongodb:// URI")
}

// open opens the store for the copy, refusing one an apppassd uses. The
// SQLite file is opened exclusively, which also keeps an apppassd from
// starting on it during the copy.
func (u storeURI) open(ctx context.Context) (apppass.Store, error) {
	if u.sqlitePath != "" {
		if _, err := os.Stat(u.sqlitePath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return sqlite.Open(u.sqlitePath, sqlite.Options{Exclusive: true})
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s, err := mongo.Open(octx, u.mongoURI, u.mongoDB)
	if err != nil {
		return nil, err
	}
	live, err := s.LiveInstances(octx)
	if err != nil {
		s.Close()
		return nil, err
	}
	if len(live) > 0 {
		s.Close()
		return nil, fmt.Errorf("database %s is in use by %d apppassd (%s): stop them first: %w", u.mongoDB, len(live), strings.Join(live, ", "), errRefused)
	}
	return s, nil
}

type copyCounts struct {
	passwords, newPasswords, events, endpoints, webhooks, newWebhooks int
}

// copyPage is how many records one round trip moves.
const copyPage = 500

// copyStore copies src into dst after checking that their digest keys
// agree: the passwords with their pending events, then the webhook
// endpoints' states and deliveries.
func copyStore(ctx context.Context, src, dst apppass.Store, p *progress) (copyCounts, error) {
	var n copyCounts
	srcKey, err := bindDigestKey(ctx, src, dst)
	if err != nil {
		return n, err
	}
	if err := copyPasswords(ctx, src, dst, srcKey, p, &n); err != nil {
		return n, err
	}
	err = copyWebhooks(ctx, src, dst, &n)
	return n, err
}

// bindDigestKey checks that src and dst digest with the same key and binds
// dst to src's; it returns src's key id ("" for an empty store).
func bindDigestKey(ctx context.Context, src, dst apppass.Store) (string, error) {
	srcKey, err := digestKey(ctx, src)
	if err != nil {
		return "", err
	}
	dstKey, err := digestKey(ctx, dst)
	if err != nil {
		return "", err
	}
	if srcKey != "" && dstKey != "" && srcKey != dstKey {
		return "", fmt.Errorf("the stores' passwords were digested with different peppers (key id %s and %s): every copied password would be refused; nothing was copied: %w", srcKey, dstKey, errRefused)
	}
	if srcKey != "" {
		if err := dst.BindDigestKey(ctx, srcKey); err != nil {
			return "", err
		}
	}
	return srcKey, nil
}

// copyPasswords copies the passwords a page at a time, each digested with
// srcKey, counting them in n.
func copyPasswords(ctx context.Context, src, dst apppass.Store, srcKey string, p *progress, n *copyCounts) error {
	total, err := src.CountPasswords(ctx)
	if err != nil {
		return err
	}
	p.start(total)
	after := ""
	for {
		page, err := src.ExportPasswords(ctx, after, copyPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			if srcKey != "" && r.Password.KeyID != srcKey {
				return fmt.Errorf("password %s was digested with key id %s, not the store's %s; stopped: %w", r.Password.UUID, r.Password.KeyID, srcKey, errRefused)
			}
		}
		// A revoked password whose revoked event is out waits only for
		// the source to forget it: there is nothing of it to copy.
		announced := slices.DeleteFunc(slices.Clone(page), func(r apppass.PasswordRecord) bool {
			return r.Revoked != nil && len(r.Pending) == 0
		})
		fresh, err := dst.ImportPasswords(ctx, announced)
		if err != nil {
			return err
		}
		n.passwords += len(page)
		n.newPasswords += fresh
		for _, r := range page {
			n.events += len(r.Pending)
		}
		p.set(n.passwords)
		after = page[len(page)-1].Password.UUID
	}
	p.done()
	return nil
}

// copyWebhooks copies the webhook endpoints' states (a disabled endpoint
// stays disabled) and the deliveries, counting them in n.
func copyWebhooks(ctx context.Context, src, dst apppass.Store, n *copyCounts) error {
	states, err := src.WebhookEndpointStates(ctx)
	if err != nil {
		return err
	}
	for _, st := range states {
		if err := dst.DisableWebhookEndpoint(ctx, st); err != nil {
			return err
		}
	}
	n.endpoints = len(states)
	after := ""
	for {
		page, err := src.ExportWebhookDeliveries(ctx, after, copyPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		fresh, err := dst.ImportWebhookDeliveries(ctx, page)
		if err != nil {
			return err
		}
		n.webhooks += len(page)
		n.newWebhooks += fresh
		after = page[len(page)-1].ID
	}
	return nil
}

// digestKey is the key id a store's digests are made with: the one it
// recorded, or else that of its first password ("" for an empty store).
func digestKey(ctx context.Context, s apppass.Store) (string, error) {
	id, err := s.DigestKeyID(ctx)
	if err != nil || id != "" {
		return id, err
	}
	first, err := s.ExportPasswords(ctx, "", 1)
	if err != nil || len(first) == 0 {
		return "", err
	}
	return first[0].Password.KeyID, nil
}

// progress draws a bar on a terminal, and a line per tenth elsewhere.
type progress struct {
	w        io.Writer
	terminal bool
	total    int64
	last     int64
}

func newProgress(w io.Writer, terminal bool) *progress { return &progress{w: w, terminal: terminal} }

func (p *progress) start(total int64) {
	p.total = total
	fmt.Fprintf(p.w, "copying %d passwords\n", total)
}

func (p *progress) set(done int) {
	d := int64(done)
	if p.total <= 0 {
		return
	}
	if p.terminal {
		const width = 40
		filled := int(min(d, p.total) * width / p.total)
		fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), min(d, p.total)*100/p.total, d, p.total)
		return
	}
	if step := max(p.total/10, 1); d/step > p.last/step || d >= p.total {
		fmt.Fprintf(p.w, "  %d/%d passwords (%d%%)\n", d, p.total, min(d, p.total)*100/p.total)
	}
	p.last = d
}

func (p *progress) done() {
	if p.terminal && p.total > 0 {
		fmt.Fprintln(p.w)
	}
}
