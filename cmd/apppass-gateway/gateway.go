package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Gateway is the reverse proxy: it checks each request's HTTP Basic app
// password with the sidecar (or finds it in a session), forwards it to the
// upstream with the user's identity in X-AppPass-* headers, and drops the
// sessions and closes the connections of a password as soon as it hears
// it was revoked.
type Gateway struct {
	upstream *url.URL
	auth     authenticator
	protocol string
	ttl      time.Duration
	realm    string
	ipHeader string
	logger   *slog.Logger
	proxy    *httputil.ReverseProxy
	macKey   []byte // keys sessions; random per process

	mu       sync.Mutex
	trusted  bool   // sessions may be used: revocations are being received
	epoch    uint64 // bumped on every change of trust
	sessions map[sessionKey]*session
	byUUID   map[string]*holder
	revoked  map[string]time.Time // uuids are never reused: refuse them for good
	// Credentials that had a session when their password was revoked are
	// refused without asking the sidecar (a client retrying a removed
	// password costs nothing and is refused at once).
	revokedKeys map[sessionKey]time.Time
	conns       map[net.Conn]*clientConn
	natsUp      bool
	watching    bool
	lastRev     time.Time

	stats struct {
		sidecarCalls, sessionHits, rejected, revocations, cancelledRequests, closedConns atomic.Int64
	}
}

// Stats counts what the gateway did.
type Stats struct {
	SidecarCalls      int64 // authentications asked of the sidecar
	SessionHits       int64 // requests let through on a session
	Rejected          int64 // requests refused with 401
	Revocations       int64 // revoked events handled
	CancelledRequests int64 // requests in flight cut off by a revocation
	ClosedConns       int64 // client connections closed by a revocation
	Sessions          int   // sessions held now
	// LastRevocation is when the last revoked event was handled.
	LastRevocation time.Time
}

// gatewayConfig is what newGateway needs.
type gatewayConfig struct {
	Upstream   *url.URL
	Auth       authenticator
	Protocol   string
	SessionTTL time.Duration // 0: no sessions
	Realm      string
	// ClientIPHeader names a header a trusted proxy in front sets to the
	// client's address (its last comma-separated entry is used); empty:
	// the connection's peer address.
	ClientIPHeader string
	Logger         *slog.Logger
	// Transport reaches the upstream; nil: a clone of http.DefaultTransport.
	Transport http.RoundTripper
}

type sessionKey [sha256.Size]byte

type session struct {
	id    identity
	until time.Time
}

// holder is everything the gateway holds for one app password.
type holder struct {
	sessions map[sessionKey]struct{}
	requests map[*inflight]struct{}
	conns    map[*clientConn]struct{}
}

func (h *holder) empty() bool {
	return len(h.sessions) == 0 && len(h.requests) == 0 && len(h.conns) == 0
}

type inflight struct {
	cancel context.CancelCauseFunc
}

// clientConn is a client connection and the passwords it carried.
type clientConn struct {
	c     net.Conn
	uuids map[string]struct{}
}

type ctxKey int

const (
	connKey ctxKey = iota
	identityKey
)

// errRevoked is the cause of a request context cancelled by a revocation.
var errRevoked = errors.New("app password revoked")

const (
	revokedMemory = 10 * time.Minute
	maxSessions   = 100_000
)

func newGateway(cfg gatewayConfig) (*Gateway, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Realm == "" {
		cfg.Realm = "App password"
	}
	g := &Gateway{
		upstream: cfg.Upstream, auth: cfg.Auth, protocol: cfg.Protocol, ttl: cfg.SessionTTL,
		realm: cfg.Realm, ipHeader: cfg.ClientIPHeader, logger: cfg.Logger, macKey: key,
		sessions: map[sessionKey]*session{}, byUUID: map[string]*holder{},
		revoked: map[string]time.Time{}, revokedKeys: map[sessionKey]time.Time{}, conns: map[net.Conn]*clientConn{},
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: transport,
		// Long polls and EAS pings: pass every byte on at once.
		FlushInterval: -1,
		ErrorHandler:  g.proxyError,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return g, nil
}

// Server returns an http.Server for the gateway: it tracks connections,
// so that a revocation can close them.
func (g *Gateway) Server() *http.Server {
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext:       g.connContext,
		ConnState:         g.connState,
	}
}

func (g *Gateway) connContext(ctx context.Context, c net.Conn) context.Context {
	cc := &clientConn{c: c, uuids: map[string]struct{}{}}
	g.mu.Lock()
	g.conns[c] = cc
	g.mu.Unlock()
	return context.WithValue(ctx, connKey, cc)
}

func (g *Gateway) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	// A hijacked connection (an upgrade) is closed through its request's
	// context, like any request in flight.
	g.mu.Lock()
	defer g.mu.Unlock()
	cc, ok := g.conns[c]
	if !ok {
		return
	}
	delete(g.conns, c)
	for uuid := range cc.uuids {
		if h := g.byUUID[uuid]; h != nil {
			delete(h.conns, cc)
			g.pruneLocked(uuid, h)
		}
	}
}

// pruneLocked forgets a holder with nothing left in it.
func (g *Gateway) pruneLocked(uuid string, h *holder) {
	if h.empty() && g.byUUID[uuid] == h {
		delete(g.byUUID, uuid)
	}
}

func (g *Gateway) holderLocked(uuid string) *holder {
	h := g.byUUID[uuid]
	if h == nil {
		h = &holder{sessions: map[sessionKey]struct{}{}, requests: map[*inflight]struct{}{}, conns: map[*clientConn]struct{}{}}
		g.byUUID[uuid] = h
	}
	return h
}

// key is the session key of a login and password from a client address:
// an HMAC under a key that never leaves the process, so the password
// itself is never kept. The address is part of it, so a session serves
// only the address the sidecar checked (a password limited to one network
// is checked again for any other).
func (g *Gateway) key(login, password, ip string) sessionKey {
	m := hmac.New(sha256.New, g.macKey)
	var n [8]byte
	for _, part := range []string{login, ip} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write([]byte(part))
	}
	m.Write([]byte(password))
	var k sessionKey
	copy(k[:], m.Sum(nil))
	return k
}

// ServeHTTP authenticates and proxies one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	login, password, ok := r.BasicAuth()
	if !ok || login == "" || password == "" {
		g.challenge(w)
		return
	}
	ip := g.clientIP(r)
	key := g.key(login, password, ip)
	now := time.Now()
	id, hit, epoch, revoked := g.session(key, now)
	if revoked {
		g.stats.rejected.Add(1)
		g.challenge(w)
		return
	}
	if hit {
		g.stats.sessionHits.Add(1)
	} else if id, ok = g.askSidecar(w, r, attempt{Login: login, Password: password, Protocol: g.protocol,
		IP: ip, UserAgent: r.UserAgent()}); !ok {
		return
	}

	// Admit the request: from here on, a revocation of id.UUID cuts it off.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	req := &inflight{cancel: cancel}
	cc, _ := r.Context().Value(connKey).(*clientConn)
	h := g.admit(key, id, !hit, epoch, now, req, cc)
	if h == nil {
		// Revoked while the sidecar answered, or since the session began.
		g.stats.rejected.Add(1)
		g.challenge(w)
		return
	}
	defer g.release(id.UUID, h, req)
	g.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, identityKey, id)))
}

// session looks key up: the identity of a live session (hit), or, for
// a key whose password was revoked, revoked. epoch is the trust's epoch
// the answer was given in, for admit.
func (g *Gateway) session(key sessionKey, now time.Time) (id identity, hit bool, epoch uint64, revoked bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, gone := g.revokedKeys[key]; gone {
		return id, false, 0, true
	}
	epoch = g.epoch
	if s, ok := g.sessions[key]; ok {
		if g.trusted && now.Before(s.until) {
			return s.id, true, epoch, false
		}
		g.dropSessionLocked(key, s)
	}
	return id, false, epoch, false
}

// askSidecar authenticates a with the sidecar. When it cannot, it answers
// the client (a challenge, 429 or 503) and returns false.
func (g *Gateway) askSidecar(w http.ResponseWriter, r *http.Request, a attempt) (identity, bool) {
	g.stats.sidecarCalls.Add(1)
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	id, err := g.auth.authenticate(ctx, a)
	cancel()
	var limited *limitedError
	switch {
	case err == nil:
		return id, true
	case errors.Is(err, errRejected):
		g.stats.rejected.Add(1)
		g.challenge(w)
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", strconv.Itoa(limited.RetryAfter))
		http.Error(w, "Too many failed logins, try again later", http.StatusTooManyRequests)
	default:
		if r.Context().Err() == nil {
			g.logger.Warn("authentication failed", "err", err)
		}
		w.Header().Set("Retry-After", "5")
		http.Error(w, "Authentication is unavailable, try again later", http.StatusServiceUnavailable)
	}
	return id, false
}

// admit records req (and its client connection cc) under id's password,
// and, for a fresh answer (keep) given while the trust has not changed
// since epoch, a session for key. It returns nil if the password is
// revoked.
func (g *Gateway) admit(key sessionKey, id identity, keep bool, epoch uint64, now time.Time, req *inflight, cc *clientConn) *holder {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, gone := g.revoked[id.UUID]; gone {
		return nil
	}
	h := g.holderLocked(id.UUID)
	if keep && g.trusted && g.epoch == epoch && g.ttl > 0 && len(g.sessions) < maxSessions {
		until := now.Add(g.ttl)
		if !id.Expires.IsZero() && id.Expires.Before(until) {
			until = id.Expires // a session ends with its password's expiry
		}
		g.sessions[key] = &session{id: id, until: until}
		h.sessions[key] = struct{}{}
	}
	h.requests[req] = struct{}{}
	if cc != nil {
		if _, tracked := g.conns[cc.c]; tracked {
			h.conns[cc] = struct{}{}
			cc.uuids[id.UUID] = struct{}{}
		}
	}
	return h
}

// release forgets a finished request.
func (g *Gateway) release(uuid string, h *holder, req *inflight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(h.requests, req)
	g.pruneLocked(uuid, h)
}

func (g *Gateway) dropSessionLocked(key sessionKey, s *session) {
	delete(g.sessions, key)
	if h := g.byUUID[s.id.UUID]; h != nil {
		delete(h.sessions, key)
		g.pruneLocked(s.id.UUID, h)
	}
}

func (g *Gateway) challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", g.realm))
	http.Error(w, "App password required", http.StatusUnauthorized)
}

func (g *Gateway) clientIP(r *http.Request) string {
	if g.ipHeader != "" {
		if v := r.Header.Get(g.ipHeader); v != "" {
			parts := strings.Split(v, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// rewrite builds the upstream request: the client's credentials and any
// X-AppPass-* headers it sent are removed, the sidecar's identity added.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(g.upstream)
	pr.SetXForwarded()
	h := pr.Out.Header
	h.Del("Authorization")
	for name := range h {
		if strings.HasPrefix(strings.ToLower(name), "x-apppass-") {
			delete(h, name)
		}
	}
	id, _ := pr.In.Context().Value(identityKey).(identity)
	h.Set("X-AppPass-UUID", id.UUID)
	h.Set("X-AppPass-User", id.UserID)
	h.Set("X-AppPass-Context", id.ContextID)
	h.Set("X-AppPass-Login", id.Login)
	h.Set("X-AppPass-Scopes", id.Scopes)
	h.Set("X-AppPass-Protocol", g.protocol)
}

func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(context.Cause(r.Context()), errRevoked) {
		// Not a response: the connection goes, as the client's password did.
		panic(http.ErrAbortHandler)
	}
	if r.Context().Err() != nil {
		return // the client left
	}
	g.logger.Warn("upstream request failed", "err", err, "path", r.URL.Path)
	http.Error(w, "Bad gateway", http.StatusBadGateway)
}

// Revoke drops everything held for uuid: its sessions go, its requests in
// flight are cancelled (upstream too) and the client connections that
// carried it are closed, long polls included. Later requests with the
// credentials of its sessions are refused at once (for revokedMemory;
// then the sidecar refuses them); any other request for it is refused
// once the sidecar names the uuid.
func (g *Gateway) Revoke(uuid, reason string) {
	if uuid == "" {
		return
	}
	now := time.Now()
	g.mu.Lock()
	g.revoked[uuid] = now
	g.lastRev = now
	h := g.byUUID[uuid]
	delete(g.byUUID, uuid)
	var requests []*inflight
	var conns []*clientConn
	if h != nil {
		for k := range h.sessions {
			delete(g.sessions, k)
			g.revokedKeys[k] = now
		}
		for r := range h.requests {
			requests = append(requests, r)
		}
		for cc := range h.conns {
			delete(cc.uuids, uuid)
			conns = append(conns, cc)
		}
	}
	g.mu.Unlock()
	g.stats.revocations.Add(1)
	for _, r := range requests {
		r.cancel(errRevoked)
	}
	for _, cc := range conns {
		_ = cc.c.Close()
	}
	g.stats.cancelledRequests.Add(int64(len(requests)))
	g.stats.closedConns.Add(int64(len(conns)))
	if h != nil {
		g.logger.Info("revoked app password dropped", "uuid", uuid, "reason", reason,
			"sessions", len(h.sessions), "requests", len(requests), "connections", len(conns))
	}
}

// setNATS and setWatching record the two halves of "revocations are being
// received"; sessions are used only while both hold. Every change empties
// the sessions: while revocations were not received, one may have been
// missed (the sidecar's cache follows the same rule).
func (g *Gateway) setNATS(up bool)     { g.setTrust(func() { g.natsUp = up }) }
func (g *Gateway) setWatching(up bool) { g.setTrust(func() { g.watching = up }) }

func (g *Gateway) setTrust(change func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	change()
	trusted := g.natsUp && g.watching
	if trusted == g.trusted {
		return
	}
	if trusted {
		g.logger.Info("sessions in use: revocations are being received")
	} else {
		g.logger.Warn("sessions suspended: revocations are not being received; every request is checked with the sidecar")
	}
	g.trusted = trusted
	g.epoch++
	clear(g.sessions)
	for uuid, h := range g.byUUID {
		clear(h.sessions)
		g.pruneLocked(uuid, h)
	}
}

// Trusted reports whether sessions are in use.
func (g *Gateway) Trusted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.trusted
}

// sweep forgets expired sessions and old revocations.
func (g *Gateway) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, s := range g.sessions {
		if !now.Before(s.until) {
			g.dropSessionLocked(k, s)
		}
	}
	for uuid, at := range g.revoked {
		if now.Sub(at) > revokedMemory {
			delete(g.revoked, uuid)
		}
	}
	for k, at := range g.revokedKeys {
		if now.Sub(at) > revokedMemory {
			delete(g.revokedKeys, k)
		}
	}
}

// runSweeper sweeps until ctx ends.
func (g *Gateway) runSweeper(ctx context.Context) {
	every := time.Minute
	if g.ttl > 0 {
		every = min(max(g.ttl/2, time.Second), time.Minute)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.sweep(now)
		}
	}
}

// Stats returns the counters.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	n, last := len(g.sessions), g.lastRev
	g.mu.Unlock()
	return Stats{LastRevocation: last,
		SidecarCalls: g.stats.sidecarCalls.Load(), SessionHits: g.stats.sessionHits.Load(),
		Rejected: g.stats.rejected.Load(), Revocations: g.stats.revocations.Load(),
		CancelledRequests: g.stats.cancelledRequests.Load(), ClosedConns: g.stats.closedConns.Load(),
		Sessions: n,
	}
}
