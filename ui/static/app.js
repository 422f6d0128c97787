// The settings page for application passwords. Plain script, no build step:
// it calls apppassd's JSON-RPC API (POST /rpc) with the user's token and
// keeps the token only in sessionStorage, never in the URL.
'use strict';

(() => {
  const TOKEN_KEY = 'apppass.token';
  // Signing in with the issuer: the refresh token, the flow under way
  // (state, PKCE verifier, nonce) and the add form kept across a
  // re-authentication. All in sessionStorage: this tab only, gone with it.
  const REFRESH_KEY = 'apppass.refresh';
  const FLOW_KEY = 'apppass.signin';
  const DRAFT_KEY = 'apppass.draft';
  const SIGNED_OUT_KEY = 'apppass.signedOut'; // no automatic sign-in after "sign out"
  const LANG_KEY = 'apppass.lang'; // the language chosen on the page (not secret)
  const $ = (id) => document.getElementById(id);

  // ---------- language ----------

  const MESSAGES = window.APPPASS_MESSAGES;

  // pickLanguage: the one chosen on the page before, else the browser's
  // first language the page has (by its primary subtag), else English.
  function pickLanguage() {
    const chosen = localStorage.getItem(LANG_KEY);
    if (chosen && MESSAGES[chosen]) return chosen;
    for (const l of navigator.languages || [navigator.language]) {
      const primary = String(l).toLowerCase().split('-')[0];
      if (MESSAGES[primary]) return primary;
    }
    return 'en';
  }

  let lang = pickLanguage();
  let dateTime;

  // t looks up key in the language's catalogue (English if it lacks it):
  // "{name}" takes values.name; with values.count, the key's plural form
  // (key_one, key_other, ...) is used.
  function t(key, values = {}) {
    return tParts(key, values).join('');
  }

  // tParts is t for values that are DOM nodes (a <time>): the text split
  // around them, nodes in place.
  function tParts(key, values = {}) {
    const catalogue = MESSAGES[lang];
    if ('count' in values) {
      const form = key + '_' + new Intl.PluralRules(lang).select(values.count);
      key = form in catalogue || form in MESSAGES.en ? form : key + '_other';
    }
    const text = catalogue[key] ?? MESSAGES.en[key] ?? key;
    return text.split(/(\{\w+\})/).filter((part) => part !== '').map((part) => {
      const m = /^\{(\w+)\}$/.exec(part);
      if (!m || !(m[1] in values)) return part;
      const v = values[m[1]];
      return v instanceof Node ? v : String(v);
    });
  }

  // applyTexts fills every element marked in index.html from the catalogue.
  function applyTexts() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of document.querySelectorAll('[data-i18n-aria-label]')) el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
    document.title = t('title');
    const select = $('lang-select');
    select.replaceChildren(...Object.keys(MESSAGES).map((l) => {
      const opt = document.createElement('option');
      opt.value = l;
      opt.lang = l;
      opt.textContent = MESSAGES[l].languageName;
      return opt;
    }));
    select.value = lang;
    dateTime = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
  }

  async function changeLanguage() {
    lang = $('lang-select').value;
    localStorage.setItem(LANG_KEY, lang);
    applyTexts();
    if (!$('manage').hidden) {
      renderApps();
      try {
        await loadList();
      } catch (err) {
        showError(err);
      }
    }
  }

  // JSON-RPC error codes, as assigned in rpc/errors.go.
  const CODE = {
    parse: -32700, invalidRequest: -32600, methodNotFound: -32601, invalidParams: -32602,
    internal: -32603, unauthenticated: -32001, forbidden: -32003, notFound: -32004,
    rejected: -32010, limit: -32029, unavailable: -32050,
  };

  // Field names the server uses in -32602, as the form calls them.
  const FIELDS = ['appName', 'appScope', 'expires', 'idleExpiry', 'allowedIPs'];

  class RpcError extends Error {
    constructor(code, message, data) {
      super(message);
      this.code = code;
      this.data = data || {};
    }
  }

  let token = null;
  let me = null; // appPasswords.whoami for token, once known
  let requestId = 0;
  const apps = new Map(); // name -> app, for display names in the list

  // ---------- token ----------

  // The token arrives in the fragment (#token=…), which browsers never send
  // to a server; it leaves the address bar and history at once, so it is
  // not bookmarked or shared with the URL, and is returned for arrive.
  function takeTokenFromFragment() {
    if (location.hash.length < 2) return null;
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has('token')) return null;
    const value = params.get('token').trim();
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return value || null;
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(REFRESH_KEY);
    token = null;
    me = null;
  }

  // ---------- signing in with the issuer ----------

  // signIn is how to sign in with the OIDC issuer (ui.SignIn), or null:
  // then only a link or a pasted token signs in.
  let signIn = null;
  let signInFailed = false; // shown to the user, who retries with the button

  async function loadSignIn() {
    try {
      const resp = await fetch('/ui/config.json', { cache: 'no-store', credentials: 'omit' });
      if (resp.ok) signIn = (await resp.json()).signIn || null;
    } catch (e) {
      signIn = null; // the page still works with a pasted token
    }
  }

  const base64URL = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const randomString = () => base64URL(crypto.getRandomValues(new Uint8Array(32)));

  // claimsOf reads a JWT's payload without checking it (the server
  // checks): for its expiry and nonce. null if it is not a JWT.
  function claimsOf(jwt) {
    try {
      const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))));
    } catch (e) {
      return null;
    }
  }

  const redirectURI = () => location.origin + location.pathname;

  // goSignIn sends the browser to the issuer: the authorization-code flow
  // with PKCE (S256), as a public client. reauth asks for a fresh login:
  // max_age when the server names one, else prompt=login.
  async function goSignIn(reauth) {
    const flow = { state: randomString(), verifier: randomString(), nonce: randomString() };
    sessionStorage.setItem(FLOW_KEY, JSON.stringify(flow));
    const challenge = base64URL(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(flow.verifier))));
    const u = new URL(signIn.authorizationEndpoint);
    const q = u.searchParams;
    q.set('response_type', 'code');
    q.set('client_id', signIn.clientId);
    q.set('redirect_uri', redirectURI());
    q.set('scope', signIn.scope);
    q.set('state', flow.state);
    q.set('nonce', flow.nonce);
    q.set('code_challenge', challenge);
    q.set('code_challenge_method', 'S256');
    q.set('ui_locales', lang);
    if (reauth) {
      if (reauth.maxAge > 0) q.set('max_age', String(reauth.maxAge));
      else q.set('prompt', 'login');
    }
    location.assign(u.toString());
  }

  class SignInError extends Error {}

  // tokenRequest posts to the issuer's token endpoint and keeps what it
  // answers: the ID token is the page's user token (its aud is the page's
  // client, which apppassd accepts).
  async function tokenRequest(form, nonce) {
    form.set('client_id', signIn.clientId);
    let resp, reply;
    try {
      resp = await fetch(signIn.tokenEndpoint, { method: 'POST', body: form, cache: 'no-store', credentials: 'omit' });
      reply = await resp.json();
    } catch (e) {
      throw new SignInError(t('unreachable'));
    }
    if (!resp.ok || !reply.id_token) throw new SignInError(reply.error_description || reply.error || 'HTTP ' + resp.status);
    const claims = claimsOf(reply.id_token);
    if (!claims || (nonce !== undefined && claims.nonce !== nonce)) throw new SignInError(t('signinStale'));
    sessionStorage.setItem(TOKEN_KEY, reply.id_token);
    if (reply.refresh_token) sessionStorage.setItem(REFRESH_KEY, reply.refresh_token);
    token = reply.id_token;
    return reply.id_token;
  }

  // takeCode finishes a sign-in the issuer sent back (?code=…&state=…):
  // the query leaves the address bar at once, the state must be the one
  // this tab started, and the code is traded with the PKCE verifier.
  // Throws SignInError when it failed.
  async function takeCode() {
    const q = new URLSearchParams(location.search);
    if (!q.has('state') || !(q.has('code') || q.has('error'))) return;
    history.replaceState(history.state, '', location.pathname + location.hash);
    const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || 'null');
    sessionStorage.removeItem(FLOW_KEY);
    if (!signIn || !flow || q.get('state') !== flow.state) throw new SignInError(t('signinStale'));
    if (q.has('error')) throw new SignInError(q.get('error_description') || q.get('error'));
    await tokenRequest(new URLSearchParams({
      grant_type: 'authorization_code', code: q.get('code'), redirect_uri: redirectURI(), code_verifier: flow.verifier,
    }), flow.nonce);
    sessionStorage.removeItem(SIGNED_OUT_KEY);
  }

  // renew gets a fresh ID token before the one held expires (30 s ahead):
  // with the refresh token if the issuer gave one, else by going to the
  // issuer again, which signs in without asking while its session lasts.
  // Tokens that did not come from the issuer are left alone.
  async function renew() {
    if (!signIn || !token) return;
    const claims = claimsOf(token);
    if (!claims || claims.iss !== signIn.issuer) return;
    if (!(typeof claims.exp === 'number' && claims.exp * 1000 < Date.now() + 30e3)) return;
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    if (refresh) {
      try {
        await tokenRequest(new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh }));
        return;
      } catch (e) {
        sessionStorage.removeItem(REFRESH_KEY);
      }
    }
    await goSignIn();
    await new Promise(() => {}); // the page is leaving
  }

  // reauthenticate keeps the add form and sends the user to the issuer for
  // a fresh login, when the server asked for one (err: -32003, data.reauth);
  // declined, the server's answer is shown as any other.
  async function reauthenticate(err) {
    const ok = await confirm(t('reauthTitle'), t('reauthText'), t('reauthOK'), false);
    if (!ok) {
      showError(err);
      return;
    }
    sessionStorage.setItem(DRAFT_KEY, JSON.stringify({
      appScope: $('app-select').value, appName: $('name-input').value,
      expires: $('expires-select').value, idleExpiry: $('idle-select').value,
    }));
    await goSignIn({ maxAge: err.data.maxAge });
  }

  // restoreDraft puts back the add form kept by reauthenticate.
  function restoreDraft() {
    const draft = JSON.parse(sessionStorage.getItem(DRAFT_KEY) || 'null');
    sessionStorage.removeItem(DRAFT_KEY);
    if (!draft) return;
    if (apps.has(draft.appScope)) $('app-select').value = draft.appScope;
    $('name-input').value = draft.appName || '';
    $('expires-select').value = draft.expires || '';
    $('idle-select').value = draft.idleExpiry || '';
    notice(t('reauthDone'));
    $('add-button').focus();
  }

  const sameAccount = (a, b) => a.contextId === b.contextId && a.userId === b.userId;

  // arrive takes a token from a link (or null) into this tab. A tab signed
  // in as one account does not silently become another: a link for
  // someone else asks first (a shared computer, a forwarded link, a second
  // groupware login in the same browser), and a refused link leaves the
  // session as it was.
  async function arrive(fresh) {
    const current = sessionStorage.getItem(TOKEN_KEY);
    if (fresh && current && fresh !== current) {
      if (!me) {
        try {
          me = await rpc('appPasswords.whoami', undefined, current);
        } catch (err) {
          me = null; // the old session is gone anyway: nothing to keep
        }
      }
      if (me) {
        let who;
        try {
          who = await rpc('appPasswords.whoami', undefined, fresh);
        } catch (err) {
          say($('error'), t('linkRefused', { me: me.login }) + ' ' +
            (err.code ? t('serverSays', { message: err.message, code: err.code }) : t('serverSaysNoCode', { message: err.message })));
          return;
        }
        if (!sameAccount(me, who)) {
          const ok = await confirm(t('switchTitle'), t('switchText', { me: me.login, other: who.login }), t('switchOK'), false);
          if (!ok) {
            notice(t('stillSignedIn', { me: me.login }));
            return;
          }
        }
        me = who;
      }
    }
    if (fresh) sessionStorage.setItem(TOKEN_KEY, fresh);
    await start();
  }

  // Links can arrive while one is being handled: one at a time.
  let arriving = Promise.resolve();
  function arriveInTurn(fresh) {
    arriving = arriving.then(() => arrive(fresh));
  }

  // ---------- JSON-RPC ----------

  async function rpc(method, params, bearer) {
    if (bearer === undefined) {
      await renew();
      bearer = token;
    }
    const request = { jsonrpc: '2.0', id: ++requestId, method };
    if (params !== undefined) request.params = params;
    let resp;
    try {
      resp = await fetch('/rpc', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + bearer },
        body: JSON.stringify(request),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new RpcError(0, t('unreachable'));
    }
    let reply;
    try {
      reply = await resp.json();
    } catch (e) {
      throw new RpcError(0, t('notJSON', { status: resp.status }));
    }
    if (reply && reply.error) throw new RpcError(reply.error.code, reply.error.message, reply.error.data);
    if (!reply || !('result' in reply)) throw new RpcError(0, t('badReply'));
    return reply.result;
  }

  // describe turns an error into words for people: what happened and what
  // to do, followed by the server's own message.
  function describe(err) {
    if (!(err instanceof RpcError)) return t('pageBug', { message: err.message });
    if (err.code === 0) return err.message;
    const d = err.data;
    let text;
    switch (err.code) {
      case CODE.unauthenticated:
        text = t('errUnauthenticated');
        break;
      case CODE.forbidden:
        text = d.reauth ? t('errReauth') : t('errForbidden');
        break;
      case CODE.notFound:
        text = t('errNotFound');
        break;
      case CODE.rejected:
        text = t('errRejected');
        break;
      case CODE.limit:
        text = d.retryAfter ? t('errThrottled', { seconds: d.retryAfter }) : t('errLimit');
        break;
      case CODE.unavailable:
        text = t('errUnavailable');
        break;
      case CODE.invalidParams:
        text = d.field === 'appName' && d.reason && d.reason.startsWith('must be 1 to')
          ? t('errNameLength')
          : t('errCheckField', { field: t(FIELDS.includes(d.field) ? 'field_' + d.field : 'field_other') });
        break;
      case CODE.internal:
        text = t('errInternal');
        break;
      case CODE.parse: case CODE.invalidRequest: case CODE.methodNotFound:
        text = t('errNotUnderstood');
        break;
      default:
        text = t('errFailed');
    }
    return text + ' ' + t('serverSays', { message: err.message, code: err.code });
  }

  // ---------- messages ----------

  function say(el, text) {
    // Emptying first makes screen readers announce a repeated message too.
    el.textContent = '';
    if (text) setTimeout(() => { el.textContent = text; }, 50);
  }

  function clearMessages() {
    $('error').textContent = '';
    $('notice').textContent = '';
  }

  function showError(err) {
    say($('error'), describe(err));
    if (err instanceof RpcError && err.code === CODE.unauthenticated) {
      forgetToken();
      showSignin();
    }
  }

  function notice(text) {
    say($('notice'), text);
  }

  // ---------- formatting ----------

  function timeElement(iso) {
    const el = document.createElement('time');
    el.dateTime = iso;
    const d = new Date(iso);
    el.textContent = isNaN(d) ? iso : dateTime.format(d);
    return el;
  }

  // humanDuration reads a Go duration ("720h0m0s") into words ("30 days").
  function humanDuration(s) {
    const unit = { h: 3600, m: 60, s: 1, ms: 1e-3, us: 1e-6, 'µs': 1e-6, ns: 1e-9 };
    let seconds = 0;
    const re = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/g;
    let m;
    let matched = '';
    while ((m = re.exec(s)) !== null) {
      seconds += parseFloat(m[1]) * unit[m[2]];
      matched += m[0];
    }
    if (matched !== s) return s;
    const plural = (count, unit) => t('duration_' + unit, { count });
    if (seconds >= 86400 && seconds % 86400 === 0) return plural(seconds / 86400, 'day');
    if (seconds >= 3600 && seconds % 3600 === 0) return plural(seconds / 3600, 'hour');
    if (seconds >= 60 && seconds % 60 === 0) return plural(seconds / 60, 'minute');
    return plural(seconds, 'second');
  }

  // appLabel is an app's name in the page's language: its displayNames
  // entry for the language, else its displayName.
  function appLabel(name) {
    const app = apps.get(name);
    if (!app) return name;
    const names = app.displayNames || {};
    return names[lang] || Object.entries(names).find(([l]) => l.split('-')[0] === lang)?.[1] || app.displayName;
  }

  function cell(row, content) {
    const td = document.createElement('td');
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    row.append(td);
    return td;
  }

  // labelCells gives each cell of a row its column's heading as
  // data-label, which a narrow screen shows beside the value when the
  // table is laid out as cards (app.css). Columns whose heading is only
  // for screen readers get none.
  function labelCells(tr, table) {
    const heads = table.tHead.rows[0].cells;
    [...tr.cells].forEach((c, i) => {
      const h = heads[i];
      if (h && !h.querySelector('.visually-hidden') && c.tagName === 'TD') c.dataset.label = h.textContent.trim();
    });
    return tr;
  }

  // ---------- views ----------

  function showSignin() {
    $('signed-in').hidden = true;
    $('manage').hidden = true;
    $('signin').hidden = false;
    $('issuer-signin').hidden = !signIn;
    $('signin-text').textContent = t(signIn ? 'signinIssuerText' : 'signinText');
    (signIn ? $('issuer-signin-button') : $('token-input')).focus();
  }

  async function start() {
    token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      // With an issuer the page signs in by itself, unless the user just
      // signed out or a sign-in failed (shown, with the button to retry).
      if (signIn && !sessionStorage.getItem(SIGNED_OUT_KEY) && !signInFailed) {
        await goSignIn();
        return;
      }
      showSignin();
      return;
    }
    $('signin').hidden = true;
    try {
      me = await rpc('appPasswords.whoami');
      $('signed-in-login').textContent = me.login || me.name;
      $('signed-in').hidden = false;
      await loadApps();
      await loadList();
      $('manage').hidden = false;
      restoreDraft();
    } catch (err) {
      showError(err);
    }
  }

  async function loadApps() {
    const list = await rpc('appPasswords.getApps');
    list.sort((a, b) => a.sort - b.sort);
    apps.clear();
    for (const app of list) apps.set(app.name, app);
    renderApps();
  }

  // renderApps fills the app drop-down, keeping what was chosen.
  function renderApps() {
    const select = $('app-select');
    const chosen = select.value;
    select.replaceChildren(...[...apps.values()].map((app) => {
      const opt = document.createElement('option');
      opt.value = app.name;
      opt.textContent = appLabel(app.name);
      return opt;
    }));
    if (chosen && apps.has(chosen)) select.value = chosen;
  }

  async function loadList() {
    const items = await rpc('appPasswords.list');
    const body = $('list-body');
    body.replaceChildren();
    for (const p of items) body.append(row(p));
    $('empty').hidden = items.length > 0;
    $('list').hidden = items.length === 0;
    $('delete-all').hidden = items.length === 0;
    return items;
  }

  function row(p) {
    const tr = document.createElement('tr');
    tr.dataset.uuid = p.uuid;
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = p.name;
    tr.append(name);
    cell(tr, appLabel(p.appScope));
    cell(tr, timeElement(p.created));
    const last = p.lastLogin;
    cell(tr, last ? timeElement(last.time) : t('never'));
    cell(tr, last && last.device ? last.device : '—');
    cell(tr, last && last.ip ? last.ip : '—');
    const expiry = [];
    if (p.expires) expiry.push(...tParts('expiresAt', { time: timeElement(p.expires) }));
    if (p.idleExpiry) {
      if (expiry.length) expiry.push(document.createElement('br'));
      expiry.push(t('deletedAfterUnused', { duration: humanDuration(p.idleExpiry) }));
    }
    const td = cell(tr, expiry.length ? '' : t('never'));
    td.append(...expiry);
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = t('delete');
    const hidden = document.createElement('span');
    hidden.className = 'visually-hidden';
    hidden.textContent = ' ' + p.name;
    del.append(hidden);
    del.addEventListener('click', () => removeOne(p, del));
    cell(tr, del);
    return labelCells(tr, $('list'));
  }

  // ---------- actions ----------

  async function add(event) {
    event.preventDefault();
    clearMessages();
    const params = { appScope: $('app-select').value, appName: $('name-input').value };
    const days = $('expires-select').value;
    if (days) params.expires = new Date(Date.now() + Number(days) * 86400e3).toISOString();
    const idle = $('idle-select').value;
    if (idle) params.idleExpiry = idle;
    const button = $('add-button');
    button.disabled = true;
    try {
      showCreated(await rpc('appPasswords.add', params));
      $('add-form').reset();
      await loadList();
    } catch (err) {
      if (err instanceof RpcError && err.code === CODE.forbidden && err.data.reauth && signIn) {
        await reauthenticate(err);
        return;
      }
      showError(err);
      if (err instanceof RpcError && err.code === CODE.invalidParams && err.data.field === 'appName') {
        $('name-input').focus();
      }
    } finally {
      button.disabled = false;
    }
  }

  // showCreated fills the one-time dialog. The result is not kept: the
  // password lives only in the dialog's DOM until it closes.
  function showCreated(result) {
    $('created-app').textContent = appLabel(result.appScope);
    $('created-login').textContent = result.login;
    $('created-password').textContent = result.password;
    const body = $('created-settings').tBodies[0];
    body.replaceChildren();
    for (const s of result.settings || []) {
      const tr = document.createElement('tr');
      cell(tr, s.protocol.toUpperCase());
      cell(tr, s.host || '—');
      cell(tr, s.port ? String(s.port) : '—');
      cell(tr, s.security ? { ssl: 'SSL/TLS', starttls: 'STARTTLS', none: t('securityNone') }[s.security] || s.security : '—');
      cell(tr, s.url || '—');
      body.append(labelCells(tr, $('created-settings')));
    }
    $('created-settings-box').hidden = body.rows.length === 0;
    $('copy-status').textContent = '';
    $('created-dialog').showModal();
    $('copy-button').focus();
  }

  // Closing (Done, Escape) drops the password from the page.
  function createdClosed() {
    for (const id of ['created-app', 'created-login', 'created-password', 'copy-status']) $(id).textContent = '';
    $('created-settings').tBodies[0].replaceChildren();
    window.getSelection().removeAllRanges();
    notice(t('added'));
    $('name-input').focus();
  }

  async function copyPassword() {
    const el = $('created-password');
    const status = $('copy-status');
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(el.textContent);
      say(status, t('copied'));
    } catch (e) {
      // No clipboard access (plain HTTP, or permission refused): select the
      // password so the user can copy it with the keyboard.
      const range = document.createRange();
      range.selectNodeContents(el);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      say(status, t('selectedToCopy'));
    }
  }

  // confirm asks in the modal confirm dialog; resolves true for Delete.
  function confirm(title, text, okLabel, destructive = true) {
    const dlg = $('confirm-dialog');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    $('confirm-ok').className = destructive ? 'danger' : 'primary';
    dlg.returnValue = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
      $('confirm-cancel').focus(); // the safe choice is the default
    });
  }

  async function removeOne(p, button) {
    clearMessages();
    const ok = await confirm(t('confirmDeleteTitle'), t('confirmDeleteText', { name: p.name, app: appLabel(p.appScope) }), t('delete'));
    if (!ok) {
      button.focus();
      return;
    }
    button.disabled = true;
    try {
      await rpc('appPasswords.remove', { uuid: p.uuid });
      notice(t('deleted', { name: p.name }));
    } catch (err) {
      showError(err);
    }
    await refreshAfterDelete();
  }

  async function removeAll() {
    clearMessages();
    const n = $('list-body').rows.length;
    const ok = await confirm(t('confirmDeleteAllTitle'), t('confirmDeleteAllText', { count: n }), t('deleteAll'));
    if (!ok) {
      $('delete-all').focus();
      return;
    }
    try {
      const result = await rpc('appPasswords.removeAll');
      notice(t('deletedAll', { count: result.removed }));
    } catch (err) {
      showError(err);
    }
    await refreshAfterDelete();
  }

  // After a delete the button that had focus is gone; focus the list's heading.
  async function refreshAfterDelete() {
    if (!token) return; // signed out by the error
    try {
      await loadList();
    } catch (err) {
      showError(err);
      return;
    }
    $('list-title').focus();
  }

  function useToken(event) {
    event.preventDefault();
    clearMessages();
    const input = $('token-input');
    const value = input.value.trim();
    input.value = '';
    if (!value) {
      say($('error'), t('pasteTokenFirst'));
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    me = null;
    start();
  }

  // ---------- wiring ----------

  document.addEventListener('DOMContentLoaded', async () => {
    applyTexts();
    $('lang-select').addEventListener('change', changeLanguage);
    const fresh = takeTokenFromFragment();
    $('issuer-signin-button').addEventListener('click', () => {
      sessionStorage.removeItem(SIGNED_OUT_KEY);
      goSignIn();
    });
    $('token-form').addEventListener('submit', useToken);
    $('add-form').addEventListener('submit', add);
    $('delete-all').addEventListener('click', removeAll);
    $('copy-button').addEventListener('click', copyPassword);
    $('created-close').addEventListener('click', () => $('created-dialog').close());
    $('created-dialog').addEventListener('close', createdClosed);
    $('confirm-cancel').addEventListener('click', () => $('confirm-dialog').close('cancel'));
    $('confirm-ok').addEventListener('click', () => $('confirm-dialog').close('ok'));
    $('forget-token').addEventListener('click', () => {
      forgetToken();
      sessionStorage.setItem(SIGNED_OUT_KEY, '1');
      clearMessages();
      showSignin();
    });
    // A link opened in this tab again, or a token pasted into the address
    // bar of the open page.
    window.addEventListener('hashchange', () => {
      const fresh = takeTokenFromFragment();
      if (!fresh) return;
      clearMessages();
      arriveInTurn(fresh);
    });
    await loadSignIn();
    try {
      await takeCode();
    } catch (err) {
      if (!(err instanceof SignInError)) throw err;
      signInFailed = true;
      say($('error'), t('signinFailed', { message: err.message }));
    }
    arriveInTurn(fresh);
  });
})();
