package ui_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/internal/oidcop"
)

// TestSettingsPageSignsInWithIssuerInChromium: with an issuer and a client
// id the page signs in by itself through a real OpenID provider's login
// page (authorization code with PKCE, a public client), keeps the ID token
// in sessionStorage only, renews it with the refresh token before it
// expires, and when add answers "sign in again" (APPPASS_ADD_MAX_AUTH_AGE)
// sends the user back to the provider with max_age, keeping what they
// typed (declined, it shows the server's answer). Signed out, it waits for the button instead of signing in again.
func TestSettingsPageSignsInWithIssuerInChromium(t *testing.T) {
	chromium := findChromium(t)
	addr := gatewaytest.FreeAddr(t)
	page := "http://" + addr + "/"
	const maxAuthAge = 15 * time.Second
	op := oidcop.Start(t, oidcop.Config{
		ClientID:     "apppass-page",
		RedirectURIs: []string{page},
		Users: []oidcop.User{{Username: "anna", Password: "correct horse",
			Claims: map[string]any{"ox_context": 7, "ox_user": 42, "email": "anna@example.com"}}},
		// Renewal starts 30 s before expiry: every call after 10 s renews.
		IDTokenLifetime: 40 * time.Second,
	})
	gatewaytest.StartDaemon(t, daemonBinary(t), "APPPASS_LISTEN="+addr,
		"APPPASS_OIDC_ISSUER="+op.Issuer, "APPPASS_OIDC_CLIENT_ID=apppass-page",
		"APPPASS_OIDC_SCOPE=openid email offline_access",
		"APPPASS_OIDC_CLAIMS=cid=ox_context,uid=ox_user,login=email",
		"APPPASS_ADD_MAX_AUTH_AGE="+maxAuthAge.String())
	p := newTab(t, chromium, "signin")
	atProvider := `location.origin === ` + strconv.Quote(op.Issuer) + ` && !!document.getElementById('username')`
	logIn := func(name string) {
		t.Helper()
		p.waitAcrossPages(name+": the provider's login page", atProvider)
		p.screenshot(name)
		p.step(name+": log in",
			chromedp.SendKeys(chromedp.ID("username"), "anna"),
			chromedp.SendKeys(chromedp.ID("password"), "correct horse"),
			chromedp.Click(chromedp.ID("submit")))
	}
	stored := func() string { return eval[string](p, `sessionStorage.getItem('apppass.token') || ''`) }

	// --- the page sends the browser to the provider by itself ---
	p.step("open the page", chromedp.Navigate(page))
	logIn("login")
	loggedIn := time.Now()
	p.waitAcrossPages("back on the page, signed in", `location.origin + location.pathname === `+strconv.Quote(page)+
		` && !document.getElementById('manage').hidden`)
	if got := eval[string](p, `document.getElementById('signed-in').textContent.trim()`); got != "Signed in as anna@example.com" {
		t.Errorf("top of the page: %q", got)
	}
	if href := eval[string](p, `location.href`); href != page {
		t.Errorf("address bar after sign-in: %q, want the code and state gone (%s)", href, page)
	}
	first := stored()
	if strings.Count(first, ".") != 2 {
		t.Fatalf("sessionStorage token %q is not the ID token", first)
	}
	if n := eval[float64](p, `localStorage.length - (localStorage.getItem('apppass.lang') === null ? 0 : 1)`); n != 0 {
		t.Errorf("localStorage holds %v entries besides the language", n)
	}
	if eval[bool](p, `sessionStorage.getItem('apppass.signin') !== null`) {
		t.Error("the finished sign-in's state and verifier stay in sessionStorage")
	}
	if op.Logins() != 1 {
		t.Fatalf("logins at the provider: %d, want 1", op.Logins())
	}
	p.step("add a password", chromedp.SendKeys(chromedp.ID("name-input"), "Phone"+kb.Enter))
	p.waitFor("the one-time dialog", `document.getElementById('created-dialog').open`)
	p.step("close it", chromedp.Click(chromedp.ID("created-close")))
	p.waitFor("the list has it", `!document.getElementById('created-dialog').open && document.querySelectorAll('#list-body tr').length === 1`)

	// --- later: the token is renewed, and add asks for a fresh login ---
	time.Sleep(time.Until(loggedIn.Add(maxAuthAge + time.Second)))
	p.step("add another", chromedp.SendKeys(chromedp.ID("name-input"), "Tablet"+kb.Enter))
	p.waitFor("asked to sign in again", `document.getElementById('confirm-dialog').open && document.getElementById('confirm-title').textContent === 'Confirm it is you'`)
	if renewed := stored(); renewed == first || strings.Count(renewed, ".") != 2 {
		t.Errorf("the token was not renewed before the call (%d chars, same: %v)", len(renewed), renewed == first)
	}
	if op.Logins() != 1 {
		t.Errorf("renewal showed the login page (%d logins)", op.Logins())
	}
	p.screenshot("reauth")
	p.step("not now", chromedp.Click(chromedp.ID("confirm-cancel")))
	p.waitFor("the server's answer is shown", `document.getElementById('error').textContent.includes('-32003')`)
	if n := len(p.rows()); n != 1 {
		t.Errorf("a declined re-authentication changed the list: %d rows", n)
	}
	p.step("add it again", chromedp.Click(chromedp.ID("add-button")))
	p.waitFor("asked again", `document.getElementById('confirm-dialog').open`)
	p.step("sign in again", chromedp.Click(chromedp.ID("confirm-ok")))
	logIn("relogin")
	p.waitAcrossPages("back, the form as it was", `!document.getElementById('manage').hidden && document.getElementById('name-input').value === 'Tablet'`)
	p.waitFor("told what to do", `document.getElementById('notice').textContent.includes('signed in again')`)
	if op.Logins() != 2 {
		t.Errorf("logins at the provider: %d, want 2", op.Logins())
	}
	p.step("add it now", chromedp.Click(chromedp.ID("add-button")))
	p.waitFor("the one-time dialog", `document.getElementById('created-dialog').open`)
	p.step("close it", chromedp.Click(chromedp.ID("created-close")))
	p.waitFor("the list has both", `!document.getElementById('created-dialog').open && document.querySelectorAll('#list-body tr').length === 2`)
	if names := eval[[]string](p, `[...document.querySelectorAll('#list-body tr th')].map(td => td.textContent.trim()).sort()`); strings.Join(names, ",") != "Phone,Tablet" {
		t.Errorf("list: %v", names)
	}

	// --- signed out, the page waits for the button ---
	p.step("sign out", chromedp.Click(chromedp.ID("forget-token")))
	p.waitFor("the sign-in section", `!document.getElementById('signin').hidden && !document.getElementById('issuer-signin').hidden`)
	time.Sleep(500 * time.Millisecond)
	if href := eval[string](p, `location.href`); href != page || stored() != "" {
		t.Errorf("after signing out: at %q, token %d chars", href, len(stored()))
	}
	p.screenshot("signed-out")
	p.step("sign in with the button", chromedp.Click(chromedp.ID("issuer-signin-button")))
	p.waitAcrossPages("signed in silently by the provider's session", `!document.getElementById('manage').hidden && document.querySelectorAll('#list-body tr').length === 2`)
	if op.Logins() != 2 {
		t.Errorf("the provider's session did not sign in silently (%d logins)", op.Logins())
	}
}

// waitAcrossPages is waitFor for a wait that spans navigations (to the
// provider and back), which end a running poll: it asks again until the
// expression is true in whatever page is loaded.
func (p *tab) waitAcrossPages(name, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { try { return !!(`+expr+`); } catch (e) { return false; } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.fail(name, fmt.Errorf("not true after 60 s: %s (last error: %v)", expr, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
