// Package ui is the user's settings page for application passwords: one
// HTML page, a script and a style sheet, embedded in the binary and served
// by apppassd at / (the page) and /ui/ (its assets). The page talks to
// POST /rpc with the user's token; it has no build step and loads nothing
// from anywhere else.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed static/index.html static/app.js static/messages.js static/app.css
var static embed.FS

// AssetPrefix is the path the page's assets are served under.
const AssetPrefix = "/ui/"

// ContentSecurityPolicy allows the page only its own script, style and
// calls to its own origin: no inline script or style, no framing, no
// plugins, no form posts anywhere (the page's forms are handled in script).
// A page that signs in with an issuer may also call the issuer's token
// endpoint (contentSecurityPolicy).
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func contentSecurityPolicy(signIn SignIn, ok bool) string {
	if !ok {
		return ContentSecurityPolicy
	}
	return strings.Replace(ContentSecurityPolicy, "connect-src 'self'", "connect-src 'self' "+origin(signIn.TokenEndpoint), 1)
}

// origin is a URL's scheme and host, as CSP and CORS name sites.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// SignIn is what the page needs to sign a user in with an OIDC issuer:
// the authorization-code flow with PKCE, as a public client (no secret
// in the browser). The page sends the ID token it gets as its user token.
type SignIn struct {
	Issuer                string `json:"issuer"`
	ClientID              string `json:"clientId"`
	AuthorizationEndpoint string `json:"authorizationEndpoint"`
	TokenEndpoint         string `json:"tokenEndpoint"`
	Scope                 string `json:"scope"`
}

// SignInSource says how the page signs in now; false while the issuer's
// endpoints are not known (the page then offers only a pasted token).
type SignInSource func() (SignIn, bool)

// ConfigPath is where the page reads how to sign in.
const ConfigPath = AssetPrefix + "config.json"

type file struct {
	body        []byte
	contentType string
	etag        string
	// cache is the Cache-Control value: the page is never stored (it
	// receives the token in its fragment); assets are revalidated, so a
	// new binary's page never runs an old script.
	cache string
}

// files maps request paths to what they serve.
var files = map[string]file{
	"/":                         load("static/index.html", "text/html; charset=utf-8", "no-store"),
	AssetPrefix + "app.js":      load("static/app.js", "text/javascript; charset=utf-8", "no-cache"),
	AssetPrefix + "messages.js": load("static/messages.js", "text/javascript; charset=utf-8", "no-cache"),
	AssetPrefix + "app.css":     load("static/app.css", "text/css; charset=utf-8", "no-cache"),
}

func load(name, contentType, cache string) file {
	b, err := static.ReadFile(name)
	if err != nil {
		panic(err) // the embed directive above guarantees it exists
	}
	sum := sha256.Sum256(b)
	return file{body: b, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, cache: cache}
}

// Handler serves the page at / and its assets under /ui/, and how to
// sign in at ConfigPath (signIn may be nil: no issuer); any other path is
// 404. Mount it for GET / and GET /ui/.
func Handler(signIn SignInSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var how SignIn
		ok := false
		if signIn != nil {
			how, ok = signIn()
		}
		h := w.Header()
		// Every answer, 404s included, is locked down the same way.
		h.Set("Content-Security-Policy", contentSecurityPolicy(how, ok))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == ConfigPath {
			var config struct {
				SignIn *SignIn `json:"signIn"`
			}
			if ok {
				config.SignIn = &how
			}
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			json.NewEncoder(w).Encode(config)
			return
		}
		f, found := files[r.URL.Path]
		if !found {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", f.contentType)
		h.Set("Cache-Control", f.cache)
		h.Set("ETag", f.etag)
		// ServeContent answers HEAD, ranges and If-None-Match; a zero
		// modification time leaves Last-Modified out.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
