// Package datadir names the files apppassd keeps in its data dir
// (APPPASS_DATA_DIR), for apppassd and for what reads them beside it: the
// CLI and the bench read the keys, a gateway or `nats sub` the NATS URL,
// and the bench (or a script) the ready file. It imports nothing of the
// server, so the CLI can use it without linking it.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// The files in the data dir. The keys and logins are generated on the
// embedded default (mode 0600) and kept across restarts.
const (
	PepperFile       = "pepper"         // the digest key
	UserTokenKeyFile = "user-token.key" // the HS256 user-token key
	GatewayKeyFile   = "gateway.key"    // the demo gateway key
	AdminKeyFile     = "admin.key"      // the demo admin key
	StoreFile        = "apppass.db"     // the embedded store (and its -wal, -shm and .lock)
	NATSDir          = "nats"           // the embedded NATS server's JetStream files
	// The embedded NATS server's logins: apppassd's own password, the
	// gateway user's, and the URL a gateway subscribes with (written at
	// every start).
	NATSServiceKeyFile = "nats-apppassd.key"
	NATSGatewayKeyFile = "nats-gateway.key"
	NATSGatewayURLFile = "nats-gateway.url"
	// ReadyFile says where a running apppassd answers (Ready): written
	// once it listens, removed when it stops taking calls.
	ReadyFile = "ready.json"
)

// Ready is what ReadyFile holds: where the apppassd with process id PID
// answers, so that what starts it (the bench, a script) can let it choose
// its ports (127.0.0.1:0) instead of guessing free ones, and learns them
// without reading its log. It holds no secret: WriteReady writes URLs
// without user, password or query.
type Ready struct {
	PID     int    `json:"pid"`
	HTTP    string `json:"http"`              // base URL of /rpc, /healthz, /readyz
	NATS    string `json:"nats"`              // the NATS apppassd publishes to; a gateway's login to the embedded one is in NATSGatewayURLFile
	Metrics string `json:"metrics,omitempty"` // URL of /metrics, when served
	Pprof   string `json:"pprof,omitempty"`   // base URL of /debug/pprof/, when served
}

// WriteReady writes r into dir's ReadyFile atomically (a temporary file
// renamed over it, mode 0600), so a reader sees all of it or none.
func WriteReady(dir string, r Ready) error {
	r.HTTP, r.NATS, r.Metrics, r.Pprof = withoutSecrets(r.HTTP), withoutSecrets(r.NATS), withoutSecrets(r.Metrics), withoutSecrets(r.Pprof)
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+ReadyFile+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(raw, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, ReadyFile))
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// ReadReady reads dir's ReadyFile; an error wrapping os.ErrNotExist says
// apppassd is not (yet, or no longer) taking calls.
func ReadReady(dir string) (Ready, error) {
	var r Ready
	raw, err := os.ReadFile(filepath.Join(dir, ReadyFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("%s: %w", filepath.Join(dir, ReadyFile), err)
	}
	return r, nil
}

// RemoveReady removes dir's ReadyFile, if there is one.
func RemoveReady(dir string) error {
	if err := os.Remove(filepath.Join(dir, ReadyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// withoutSecrets keeps only the scheme, host and path of each URL in a
// comma-separated list (a NATS URL may name several servers): a user,
// password or token in it, or a query, is left out, and what does not
// parse as a URL is left out whole.
func withoutSecrets(urls string) string {
	var kept []string
	for raw := range strings.SplitSeq(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Scheme == "" || u.Host == "" {
			continue
		}
		kept = append(kept, (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String())
	}
	return strings.Join(kept, ",")
}
