package deploy_test

// The backends behind the gateways under test: what is tested is nginx,
// Dovecot and apppassd, so the mail and DAV servers behind nginx are small
// Go servers that record what reached them.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineServer accepts connections on 127.0.0.1 and runs serve on each.
type lineServer struct {
	addr string
	l    net.Listener
	mu   sync.Mutex
	seen []string // what the backend recorded, one entry per event
	wg   sync.WaitGroup
}

func startLineServer(t testing.TB, serve func(s *lineServer, rw *bufio.ReadWriter)) *lineServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{addr: l.Addr().String(), l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				serve(s, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)))
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); s.wg.Wait() })
	return s
}

func (s *lineServer) record(event string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, event)
}

func (s *lineServer) events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// saw reports whether an event containing want was recorded.
func (s *lineServer) saw(want string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.seen {
		if strings.Contains(e, want) {
			return true
		}
	}
	return false
}

func reply(rw *bufio.ReadWriter, lines ...string) bool {
	for _, l := range lines {
		if _, err := rw.WriteString(l + "\r\n"); err != nil {
			return false
		}
	}
	return rw.Flush() == nil
}

// startSMTPSink is an SMTP server that takes every message: nginx's smtp
// proxy hands it the authenticated session (XCLIENT, then the client's
// MAIL, RCPT, DATA).
func startSMTPSink(t testing.TB) *lineServer {
	return startLineServer(t, func(s *lineServer, rw *bufio.ReadWriter) {
		if !reply(rw, "220 sink.test ESMTP") {
			return
		}
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			verb, _, _ := strings.Cut(line, " ")
			var ok bool
			switch strings.ToUpper(verb) {
			case "EHLO":
				ok = reply(rw, "250-sink.test", "250-XCLIENT ADDR LOGIN NAME HELO PROTO", "250-8BITMIME", "250 ENHANCEDSTATUSCODES")
			case "HELO":
				ok = reply(rw, "250 sink.test")
			case "XCLIENT":
				s.record(line)
				ok = reply(rw, "220 sink.test ESMTP")
			case "MAIL", "RCPT":
				s.record(line)
				ok = reply(rw, "250 2.1.0 Ok")
			case "DATA":
				if !reply(rw, "354 End data with <CR><LF>.<CR><LF>") {
					return
				}
				var body strings.Builder
				for {
					l, err := rw.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
					body.WriteString(l)
				}
				s.record("DATA " + body.String())
				ok = reply(rw, "250 2.0.0 Ok: queued")
			case "RSET", "NOOP":
				ok = reply(rw, "250 2.0.0 Ok")
			case "QUIT":
				reply(rw, "221 2.0.0 Bye")
				return
			default:
				ok = reply(rw, "502 5.5.2 Error: command not recognized")
			}
			if !ok {
				return
			}
		}
	})
}

// startPOP3Sink is a POP3 server with empty mailboxes that takes any login
// (nginx logs in to it with USER and PASS after apppassd accepted).
func startPOP3Sink(t testing.TB) *lineServer {
	return startLineServer(t, func(s *lineServer, rw *bufio.ReadWriter) {
		if !reply(rw, "+OK sink ready") {
			return
		}
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			verb, arg, _ := strings.Cut(line, " ")
			var ok bool
			switch strings.ToUpper(verb) {
			case "USER":
				s.record("USER " + arg)
				ok = reply(rw, "+OK")
			case "PASS":
				ok = reply(rw, "+OK logged in")
			case "CAPA":
				ok = reply(rw, "+OK", "USER", "UIDL", ".")
			case "STAT":
				ok = reply(rw, "+OK 0 0")
			case "LIST", "UIDL":
				s.record("LIST")
				ok = reply(rw, "+OK 0 messages", ".")
			case "NOOP":
				ok = reply(rw, "+OK")
			case "QUIT":
				reply(rw, "+OK bye")
				return
			default:
				ok = reply(rw, "-ERR unknown command")
			}
			if !ok {
				return
			}
		}
	})
}

// davEcho is the upstream behind nginx's DAV locations: it answers every
// request with what arrived, as JSON.
type davEcho struct {
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	AppPass       map[string]string `json:"appPass"` // X-AppPass-* headers
	Authorization string            `json:"authorization"`
	BodyBytes     int               `json:"bodyBytes"`
	RealIP        string            `json:"realIP"`
}

func startDAVUpstream(t testing.TB) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		e := davEcho{Method: r.Method, Path: r.URL.RequestURI(), AppPass: map[string]string{},
			Authorization: r.Header.Get("Authorization"), BodyBytes: int(n), RealIP: r.Header.Get("X-Real-IP")}
		for k, v := range r.Header {
			if strings.HasPrefix(k, "X-Apppass-") {
				e.AppPass[strings.TrimPrefix(k, "X-Apppass-")] = strings.Join(v, "|")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	}))
	t.Cleanup(s.Close)
	return s
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key,
// and returns a pool trusting it.
func writeCert(t testing.TB, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "apppass gateway test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
