package deploy_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Benchmarks with the real Dovecot (BENCHMARKS.md has the numbers):
//
//	go test -run '^$' -bench 'Dovecot|RevokeToDisconnect' -benchtime 10s ./deploy/
//
// They need what TestRevocationEndsMailSessions needs (root, Dovecot
// with POP3 and Lua, nginx).

// BenchmarkDovecotLogin logs in over IMAP through each passdb, one after
// the other, a new connection each (greeting, LOGIN, answer), from one
// client address: a login of a known device. passdb=static (no apppass:
// every user has one fixed password) is Dovecot's own cost, for reference.
//
// mode=default is Debian's Dovecot as installed: a new login process and a
// new imap process for every connection. mode=performance is Dovecot's
// high-performance login mode (docs/gateways.md).
func BenchmarkDovecotLogin(b *testing.B) {
	for _, c := range []struct {
		name        string
		passdb      string
		performance bool
	}{
		{"mode=default/passdb=static", "static", false},
		{"mode=default/passdb=checkpassword", "checkpassword", false},
		{"mode=default/passdb=lua", "lua", false},
		{"mode=performance/passdb=static", "static", true},
		{"mode=performance/passdb=checkpassword", "checkpassword", true},
		{"mode=performance/passdb=lua", "lua", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			ms := startMailStack(b, mailStackOptions{passdb: c.passdb, performance: c.performance})
			u := nextUser()
			password := staticPassword
			if c.passdb != "static" {
				password = ms.add(b, ms.token(b, u), "mail").Password
			}
			from := nextIP()
			for b.Loop() {
				m, ok := imapLoginFrom(b, "IMAP LOGIN", from, ms.imap, nil, u.Login, password)
				m.conn.Close()
				if !ok {
					b.Fatal("login refused")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// BenchmarkRevokeToDisconnect: per round, add a mail password, log in with
// it over IMAP and IDLE, remove it, and time how long after remove
// returned the server closed the connection. Run it for 200 rounds with
// -benchtime 200x.
func BenchmarkRevokeToDisconnect(b *testing.B) {
	ms := startMailStack(b, mailStackOptions{})
	u := nextUser()
	token := ms.token(b, u)
	var sinceReturn, sinceCall []time.Duration
	for b.Loop() {
		p := ms.add(b, token, "mail")
		m := idle(b, "IMAP IDLE", ms.imap, nil, u.Login, p.Password)
		called := time.Now()
		ms.call(b, token, "appPasswords.remove", map[string]any{"uuid": p.UUID})
		returned := time.Now()
		select {
		case closed := <-m.closed:
			if d := closed.Sub(returned); d > 100*time.Millisecond {
				b.Logf("round %d: closed %s after remove returned", len(sinceReturn)+1, d)
			}
			sinceReturn = append(sinceReturn, closed.Sub(returned))
			sinceCall = append(sinceCall, closed.Sub(called))
		case <-time.After(10 * time.Second):
			b.Fatal("the IDLE session was not closed within 10 s")
		}
		m.conn.Close()
	}
	slices.Sort(sinceReturn)
	slices.Sort(sinceCall)
	q := func(d []time.Duration, f float64) float64 {
		return float64(d[min(len(d)-1, int(f*float64(len(d))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(sinceReturn, 0.5), "p50-ms")
	b.ReportMetric(q(sinceReturn, 0.99), "p99-ms")
	b.ReportMetric(q(sinceReturn, 1), "max-ms")
	b.ReportMetric(q(sinceCall, 0.99), "p99-from-call-ms")
	b.Log(fmt.Sprintf("%d rounds; from remove returning: p50 %.1f ms, p99 %.1f ms, max %.1f ms; from remove called: p99 %.1f ms",
		len(sinceReturn), q(sinceReturn, 0.5), q(sinceReturn, 0.99), q(sinceReturn, 1), q(sinceCall, 0.99)))
}
