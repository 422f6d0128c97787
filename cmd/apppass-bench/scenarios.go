package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/apppass/apppass"
)

type options struct {
	store        string // "sqlite" or "mongo"
	scaleLogins  int    // passwords the scale scenario's logins use
	duration     time.Duration
	concurrency  []int
	transports   []string
	scaleSizes   []int
	progress     *os.File
	propagations int
}

type login struct {
	login, password string
}

// addPasswords creates n mail passwords through the real API, spread over
// users at the per-user limit of 50, and returns them as logins.
func addPasswords(ctx context.Context, t *target, n int) ([]login, error) {
	client := newHTTPClient(8)
	out := make([]login, 0, n)
	for i := 0; len(out) < n; i++ {
		u, token := t.userToken(i)
		c := httpCaller(t.url, token, client)
		for j := 0; j < 50 && len(out) < n; j++ {
			var created struct{ Password string }
			if err := c.Call(ctx, "appPasswords.add", map[string]any{"appScope": "mail", "appName": fmt.Sprintf("bench %d", j)}, &created); err != nil {
				return nil, fmt.Errorf("adding bench passwords: %w", err)
			}
			out = append(out, login{u.Login, created.Password})
		}
	}
	return out, nil
}

// gatewayCallers returns one caller per worker over transport.
func gatewayCallers(t *target, transport string, n int) ([]caller, error) {
	callers := make([]caller, n)
	shared := newHTTPClient(n)
	for i := range callers {
		if transport == "ws" {
			ws, err := dialWS(t.url, t.gatewayKey)
			if err != nil {
				return nil, err
			}
			callers[i] = ws
			continue
		}
		callers[i] = httpCaller(t.url, t.gatewayKey, shared)
	}
	return callers, nil
}

// authParams are the params of an authenticate of l.
func authParams(l login) map[string]any {
	return map[string]any{"login": l.login, "password": l.password, "protocol": "imap", "ip": "192.0.2.1"}
}

// authLoad authenticates logins round-robin from every worker. With bare
// set, each HTTP step is followed by the same load on the bare net/http
// reference.
func authLoad(ctx context.Context, t *target, name string, logins []login, o options, random bool, bare *bareServer) ([]Result, error) {
	var results []Result
	for _, transport := range o.transports {
		for _, c := range o.concurrency {
			callers, err := gatewayCallers(t, transport, c)
			if err != nil {
				return nil, err
			}
			next := make([]int, c)
			for w := range next {
				next[w] = w * len(logins) / c
			}
			r := run(ctx, name, c, o.duration, o.progress, func(ctx context.Context, w int) error {
				i := next[w] % len(logins)
				if random {
					i = mrand.IntN(len(logins))
				}
				next[w]++
				var res struct{ UUID string }
				return callers[w].Call(ctx, "appPasswords.authenticate", authParams(logins[i]), &res)
			})
			closeAll(callers)
			r.Transport = transport
			r.PeakRSSMB = t.peakRSSMB()
			results = append(results, r)
			if bare != nil && transport == "http" {
				b := bareLoad(ctx, bare, c, o, logins)
				if b.PerSecond > 0 {
					r.Note = fmt.Sprintf("%.2f× the bare server's calls/s, p99 %.2f× its p99", r.PerSecond/b.PerSecond, r.P99ms/b.P99ms)
					results[len(results)-1] = r
				}
				results = append(results, b)
			}
		}
	}
	return results, nil
}

// authScenario: "hot" with the cache on, "cold" with it off so every call
// is a storage lookup (plus the throttle's read). Hot authenticate runs
// beside the bare net/http reference, answering what apppassd answers.
func authScenario(ctx context.Context, o options, hot bool) ([]Result, error) {
	ttl, name := "0", "authenticate cold"
	if hot {
		ttl, name = "5m", "authenticate hot"
	}
	t, err := spawn(o.store, "APPPASS_AUTH_CACHE_TTL="+ttl)
	if err != nil {
		return nil, err
	}
	defer t.close()
	logins, err := addPasswords(ctx, t, 200)
	if err != nil {
		return nil, err
	}
	// One login each first: the first use writes lastLogin and an event.
	if err := warmUp(ctx, t, logins); err != nil {
		return nil, err
	}
	if !hot {
		return authLoad(ctx, t, name, logins, o, false, nil)
	}
	c := httpCaller(t.url, t.gatewayKey, newHTTPClient(1))
	reply, err := c.Raw(ctx, "appPasswords.authenticate", authParams(logins[0]))
	if err != nil {
		return nil, err
	}
	bare, err := startBare(reply)
	if err != nil {
		return nil, err
	}
	defer bare.close()
	return authLoad(ctx, t, name, logins, o, false, bare)
}

// warmUp logs each login in once, then waits for apppassd to settle: the
// first uses queued an event each, and publishing them (and purging what
// the embedded NATS acked) would otherwise run during the first measured
// step, and only during apppassd's half of a side-by-side comparison.
func warmUp(ctx context.Context, t *target, logins []login) error {
	c := httpCaller(t.url, t.gatewayKey, newHTTPClient(1))
	for _, l := range logins {
		if err := c.Call(ctx, "appPasswords.authenticate", authParams(l), nil); err != nil {
			return fmt.Errorf("warming up: %w", err)
		}
	}
	return t.settle(ctx)
}

// uiMix: each worker is a user adding, listing and removing passwords.
func uiMix(ctx context.Context, o options) ([]Result, error) {
	t, err := spawn(o.store)
	if err != nil {
		return nil, err
	}
	defer t.close()
	return uiMixLoad(ctx, t, "ui mix add/list/remove", o), nil
}

func uiMixLoad(ctx context.Context, t *target, name string, o options) []Result {
	var results []Result
	for _, c := range o.concurrency {
		client := newHTTPClient(c)
		type userState struct {
			c     caller
			step  int
			added string
		}
		users := make([]*userState, c)
		for w := range users {
			_, token := t.userToken(w + 10000*c)
			users[w] = &userState{c: httpCaller(t.url, token, client)}
		}
		r := run(ctx, name, c, o.duration, o.progress, func(ctx context.Context, w int) error {
			u := users[w]
			defer func() { u.step = (u.step + 1) % 3 }()
			switch u.step {
			case 0:
				var created struct{ UUID string }
				err := u.c.Call(ctx, "appPasswords.add", map[string]any{"appScope": "caldav", "appName": "bench"}, &created)
				u.added = created.UUID
				return err
			case 1:
				var list []json.RawMessage
				return u.c.Call(ctx, "appPasswords.list", nil, &list)
			default:
				return u.c.Call(ctx, "appPasswords.remove", map[string]any{"uuid": u.added}, nil)
			}
		})
		r.Transport = "http"
		r.PeakRSSMB = t.peakRSSMB()
		results = append(results, r)
	}
	return results
}

// propagation: time from remove returning to a NATS subscriber holding
// the revoked event. remove waits for the stream's ack, so the event
// usually arrives before remove returns: such samples count as 0 and the
// note says how many there were.
func propagation(ctx context.Context, o options) ([]Result, error) {
	t, err := spawn(o.store)
	if err != nil {
		return nil, err
	}
	defer t.close()
	nc, err := nats.Connect(t.natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var mu sync.Mutex
	arrived := map[string]chan time.Time{}
	waitFor := func(uuid string) chan time.Time {
		mu.Lock()
		defer mu.Unlock()
		ch, ok := arrived[uuid]
		if !ok {
			ch = make(chan time.Time, 1)
			arrived[uuid] = ch
		}
		return ch
	}
	_, err = nc.Subscribe("apppasswords.revoked.>", func(m *nats.Msg) {
		at := time.Now()
		var ev struct{ Data struct{ UUID string } }
		if json.Unmarshal(m.Data, &ev) == nil {
			waitFor(ev.Data.UUID) <- at
		}
	})
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	_, token := t.userToken(0)
	c := httpCaller(t.url, token, newHTTPClient(1))
	var fromReturn, fromCall []time.Duration
	early := 0
	start := time.Now()
	for i := range o.propagations {
		var created struct{ UUID string }
		if err := c.Call(ctx, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "p"}, &created); err != nil {
			return nil, err
		}
		called := time.Now()
		if err := c.Call(ctx, "appPasswords.remove", map[string]any{"uuid": created.UUID}, nil); err != nil {
			return nil, err
		}
		returned := time.Now()
		select {
		case at := <-waitFor(created.UUID):
			d := at.Sub(returned)
			if d < 0 {
				early++
				d = 0
			}
			fromReturn = append(fromReturn, d)
			fromCall = append(fromCall, at.Sub(called))
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("revoked event %d never arrived", i)
		}
		fmt.Fprintf(o.progress, "\r  propagation %d/%d   ", i+1, o.propagations)
	}
	fmt.Fprintf(o.progress, "\r%60s\r", "")
	el := time.Since(start).Seconds()
	r1 := summarize("revocation: remove returned -> event", 1, fromReturn, el)
	r1.Note = fmt.Sprintf("%d of %d events arrived before remove returned (counted as 0 ms)", early, len(fromReturn))
	r2 := summarize("revocation: remove called -> event", 1, fromCall, el)
	r1.PeakRSSMB, r2.PeakRSSMB = t.peakRSSMB(), t.peakRSSMB()
	r1.PerSecond, r2.PerSecond = 0, 0
	return []Result{r1, r2}, nil
}

// adminAdd: an admin service adds one password each for distinct users,
// as a provisioning run would.
func adminAdd(ctx context.Context, o options) ([]Result, error) {
	t, err := spawn(o.store)
	if err != nil {
		return nil, err
	}
	defer t.close()
	var results []Result
	var next atomic.Int64
	for _, c := range o.concurrency {
		client := newHTTPClient(c)
		callers := make([]caller, c)
		for w := range callers {
			callers[w] = httpCaller(t.url, t.adminKey, client)
		}
		r := run(ctx, "admin add, distinct users", c, o.duration, o.progress, func(ctx context.Context, w int) error {
			n := next.Add(1)
			return callers[w].Call(ctx, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "provisioned",
				"user": map[string]any{"contextId": 7, "userId": n, "login": fmt.Sprintf("user%d@example.com", n)}}, nil)
		})
		r.Transport = "http"
		r.PeakRSSMB = t.peakRSSMB()
		results = append(results, r)
	}
	return results, nil
}

// scale: cold authenticate and the UI mix with few and with many stored
// passwords, seeded in bulk through the storage port beside the running
// daemon.
func scale(ctx context.Context, o options) ([]Result, error) {
	t, err := spawn(o.store, "APPPASS_AUTH_CACHE_TTL=0")
	if err != nil {
		return nil, err
	}
	defer t.close()
	store, err := t.openStore(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	var logins []login
	var results []Result
	seeded := 0
	for _, size := range o.scaleSizes {
		began := time.Now()
		for seeded < size {
			n := min(1000, size-seeded)
			batch, more, err := seedPasswords(t, seeded, n)
			if err != nil {
				return nil, err
			}
			if _, err := store.ImportPasswords(ctx, batch); err != nil {
				return nil, fmt.Errorf("seeding: %w", err)
			}
			seeded += n
			logins = append(logins, more...)
			if seeded%50000 == 0 {
				fmt.Fprintf(o.progress, "\r  seeded %d   ", seeded)
			}
		}
		fmt.Fprintf(o.progress, "\r  seeded up to %d passwords in %s\n", size, time.Since(began).Round(time.Millisecond))
		so := o
		so.transports = []string{"http"}
		// The same load at every size: logins of o.scaleLogins passwords
		// drawn from all those stored, so what grows is the store, not
		// the share of logins that write lastLogin (once a minute per
		// password). The row "every login another password" shows that
		// share at its worst.
		sample := logins
		if len(logins) > o.scaleLogins {
			sample = make([]login, o.scaleLogins)
			for i, j := range mrand.Perm(len(logins))[:o.scaleLogins] {
				sample[i] = logins[j]
			}
		}
		rs, err := authLoad(ctx, t, fmt.Sprintf("authenticate cold @%d stored", size), sample, so, true, nil)
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
		results = append(results, uiMixLoad(ctx, t, fmt.Sprintf("ui mix @%d stored", size), so)...)
		if len(logins) > o.scaleLogins {
			rs, err := authLoad(ctx, t, fmt.Sprintf("auth cold @%d, every login another password", size), logins, so, true, nil)
			if err != nil {
				return nil, err
			}
			results = append(results, rs...)
		}
	}
	return results, nil
}

// seedPasswords makes n passwords for users from index from/50 on.
func seedPasswords(t *target, from, n int) ([]apppass.PasswordRecord, []login, error) {
	ps := make([]apppass.PasswordRecord, 0, n)
	ls := make([]login, 0, n)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := from; i < from+n; i++ {
		u := apppass.User{ContextID: 2, UserID: int64(i / 50), Login: fmt.Sprintf("seed%d@example.com", i/50)}
		secret, err := apppass.GeneratePassword()
		if err != nil {
			return nil, nil, err
		}
		norm, _ := apppass.NormalizePassword(secret)
		var id [16]byte
		_, _ = rand.Read(id[:])
		id[6] = id[6]&0x0f | 0x40
		id[8] = id[8]&0x3f | 0x80
		ps = append(ps, apppass.PasswordRecord{Password: apppass.Password{
			UUID:  fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16]),
			Owner: u, AppScope: "mail", Name: "seeded", Created: now, Digest: t.digester.Digest(norm), KeyID: t.digester.KeyID(),
			// Used before, from the address the load comes from: lookups
			// are measured, not first-use writes and events.
			LastLogin: &apppass.LastLogin{Time: now, IP: "192.0.2.1"}, KnownIPs: []string{"192.0.2.1"},
		}})
		ls = append(ls, login{u.Login, secret})
	}
	return ps, ls, nil
}

// baseline verifies the same logins in process the way Mailcow/Dovecot
// setups do (bcrypt cost 10 against each of the user's passwords until one
// matches), with Argon2id at OWASP's parameters, and with this design's
// keyed digest plus one map lookup, so the ratios are measured.
func baseline(ctx context.Context, o options) ([]Result, error) {
	const perUser = 5 // active passwords per user
	type stored struct {
		bcrypt [][]byte
		argon  [][]byte
		salt   [][]byte
	}
	users := make([]stored, 16)
	secrets := make([][]string, len(users))
	pepper := make([]byte, 32)
	_, _ = rand.Read(pepper)
	index := map[string]int{}
	for u := range users {
		for range perUser {
			s, _ := apppass.GeneratePassword()
			norm, _ := apppass.NormalizePassword(s)
			h, err := bcrypt.GenerateFromPassword(norm, 10)
			if err != nil {
				return nil, err
			}
			salt := make([]byte, 16)
			_, _ = rand.Read(salt)
			users[u].bcrypt = append(users[u].bcrypt, h)
			users[u].salt = append(users[u].salt, salt)
			users[u].argon = append(users[u].argon, argon2.IDKey(norm, salt, 2, 19*1024, 1, 32))
			secrets[u] = append(secrets[u], s)
			m := hmac.New(sha256.New, pepper)
			m.Write(norm)
			index[string(m.Sum(nil))] = u
		}
	}
	pick := func() (int, []byte) {
		u := mrand.IntN(len(users))
		norm, _ := apppass.NormalizePassword(secrets[u][mrand.IntN(perUser)])
		return u, norm
	}
	kinds := []struct {
		name   string
		verify func() error
	}{
		{"baseline bcrypt-10 x5/user", func() error {
			u, norm := pick()
			for _, h := range users[u].bcrypt {
				if bcrypt.CompareHashAndPassword(h, norm) == nil {
					return nil
				}
			}
			return fmt.Errorf("no match")
		}},
		{"baseline argon2id m=19MiB t=2 x5/user", func() error {
			u, norm := pick()
			for i, h := range users[u].argon {
				if subtle.ConstantTimeCompare(argon2.IDKey(norm, users[u].salt[i], 2, 19*1024, 1, 32), h) == 1 {
					return nil
				}
			}
			return fmt.Errorf("no match")
		}},
		{"this design: HMAC + lookup", func() error {
			_, norm := pick()
			m := hmac.New(sha256.New, pepper)
			m.Write(norm)
			if _, ok := index[string(m.Sum(nil))]; !ok {
				return fmt.Errorf("no match")
			}
			return nil
		}},
	}
	var results []Result
	for _, k := range kinds {
		for _, c := range o.concurrency {
			r := run(ctx, k.name, c, o.duration, o.progress, func(context.Context, int) error { return k.verify() })
			r.Transport = "inproc"
			results = append(results, r)
		}
	}
	return results, nil
}
