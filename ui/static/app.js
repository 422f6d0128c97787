// The settings page for application passwords. Plain script, no build step:
// it calls apppassd's JSON-RPC API (POST /rpc) with the user's token and
// keeps the token only in sessionStorage, never in the URL.
'use strict';

(() => {
  const TOKEN_KEY = 'apppass.token';
  const $ = (id) => document.getElementById(id);

  // JSON-RPC error codes, as assigned in rpc/errors.go.
  const CODE = {
    parse: -32700, invalidRequest: -32600, methodNotFound: -32601, invalidParams: -32602,
    internal: -32603, unauthenticated: -32001, forbidden: -32003, notFound: -32004,
    rejected: -32010, limit: -32029, unavailable: -32050,
  };

  // Field names the server uses in -32602, as the form calls them.
  const FIELD = { appName: 'the name', appScope: 'the application', expires: 'the expiry',
    idleExpiry: 'the unused-for limit', allowedIPs: 'the allowed addresses' };

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
    const t = params.get('token').trim();
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return t || null;
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    me = null;
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
          say($('error'), `The access token in the link was not accepted, so this tab stays signed in as ${me.login}. ` +
            `(Server: ${err.message}${err.code ? '; code ' + err.code : ''})`);
          return;
        }
        if (!sameAccount(me, who)) {
          const ok = await confirm('Switch account?',
            `This tab is signed in as ${me.login}. The link you opened is for ${who.login}. Switch to ${who.login}?`,
            'Switch', false);
          if (!ok) {
            notice(`Still signed in as ${me.login}; the link was not used.`);
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

  async function rpc(method, params, bearer = token) {
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
      throw new RpcError(0, 'The server could not be reached. Check your connection and try again.');
    }
    let reply;
    try {
      reply = await resp.json();
    } catch (e) {
      throw new RpcError(0, `The server answered with HTTP ${resp.status} instead of a JSON-RPC reply.`);
    }
    if (reply && reply.error) throw new RpcError(reply.error.code, reply.error.message, reply.error.data);
    if (!reply || !('result' in reply)) throw new RpcError(0, 'The server sent a reply the page does not understand.');
    return reply.result;
  }

  // describe turns an error into words for people: what happened and what
  // to do, followed by the server's own message.
  function describe(err) {
    if (!(err instanceof RpcError)) return 'Something went wrong in this page: ' + err.message;
    if (err.code === 0) return err.message;
    const d = err.data;
    let text;
    switch (err.code) {
      case CODE.unauthenticated:
        text = 'Your session has expired or you are not signed in. Open this page again from your groupware, or paste a new access token.';
        break;
      case CODE.forbidden:
        text = 'You may not manage application passwords from this session (for example one opened with an application password).';
        break;
      case CODE.notFound:
        text = 'This application password does not exist any more; it may have been deleted elsewhere.';
        break;
      case CODE.rejected:
        text = 'The application password was not accepted.';
        break;
      case CODE.limit:
        text = d.retryAfter
          ? `Too many attempts. Please wait ${d.retryAfter} seconds and try again.`
          : 'You have reached the maximum number of application passwords. Delete one you no longer use, then try again.';
        break;
      case CODE.unavailable:
        text = 'The service is temporarily unavailable. Please try again in a moment.';
        break;
      case CODE.invalidParams:
        text = d.field === 'appName' && d.reason && d.reason.startsWith('must be 1 to')
          ? 'Please enter a name of 1 to 128 characters.'
          : `Please check ${FIELD[d.field] || 'your input'}.`;
        break;
      case CODE.internal:
        text = 'Something went wrong on the server. Please try again later.';
        break;
      case CODE.parse: case CODE.invalidRequest: case CODE.methodNotFound:
        text = 'The server did not understand this page’s request. Reload the page and try again.';
        break;
      default:
        text = 'The request failed.';
    }
    return `${text} (Server: ${err.message}; code ${err.code})`;
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

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

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
    const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
    if (seconds >= 86400 && seconds % 86400 === 0) return plural(seconds / 86400, 'day');
    if (seconds >= 3600 && seconds % 3600 === 0) return plural(seconds / 3600, 'hour');
    if (seconds >= 60 && seconds % 60 === 0) return plural(seconds / 60, 'minute');
    return plural(seconds, 'second');
  }

  function appLabel(name) {
    const app = apps.get(name);
    return app ? app.displayName : name;
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
    $('token-input').focus();
  }

  async function start() {
    token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
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
    } catch (err) {
      showError(err);
    }
  }

  async function loadApps() {
    const list = await rpc('appPasswords.getApps');
    list.sort((a, b) => a.sort - b.sort);
    apps.clear();
    const select = $('app-select');
    select.replaceChildren();
    for (const app of list) {
      apps.set(app.name, app);
      const opt = document.createElement('option');
      opt.value = app.name;
      opt.textContent = app.displayName;
      select.append(opt);
    }
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
    cell(tr, last ? timeElement(last.time) : 'Never');
    cell(tr, last && last.device ? last.device : '—');
    cell(tr, last && last.ip ? last.ip : '—');
    const expiry = [];
    if (p.expires) expiry.push('Expires ', timeElement(p.expires));
    if (p.idleExpiry) {
      if (expiry.length) expiry.push(document.createElement('br'));
      expiry.push(`Deleted after ${humanDuration(p.idleExpiry)} unused`);
    }
    const td = cell(tr, expiry.length ? '' : 'Never');
    td.append(...expiry);
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = 'Delete';
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
      cell(tr, s.security ? { ssl: 'SSL/TLS', starttls: 'STARTTLS', none: 'None' }[s.security] || s.security : '—');
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
    notice('The application password was added. It is listed below.');
    $('name-input').focus();
  }

  async function copyPassword() {
    const el = $('created-password');
    const status = $('copy-status');
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(el.textContent);
      say(status, 'Copied to the clipboard.');
    } catch (e) {
      // No clipboard access (plain HTTP, or permission refused): select the
      // password so the user can copy it with the keyboard.
      const range = document.createRange();
      range.selectNodeContents(el);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      say(status, 'The password is selected: press Ctrl+C (⌘C on a Mac) to copy it.');
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
    const ok = await confirm('Delete application password?',
      `Delete “${p.name}” (${appLabel(p.appScope)})? Apps using it can no longer sign in.`, 'Delete');
    if (!ok) {
      button.focus();
      return;
    }
    button.disabled = true;
    try {
      await rpc('appPasswords.remove', { uuid: p.uuid });
      notice(`Deleted “${p.name}”.`);
    } catch (err) {
      showError(err);
    }
    await refreshAfterDelete();
  }

  async function removeAll() {
    clearMessages();
    const n = $('list-body').rows.length;
    const ok = await confirm('Delete all application passwords?',
      `Delete all ${n} application password${n === 1 ? '' : 's'}? Every app using one of them can no longer sign in.`,
      'Delete all');
    if (!ok) {
      $('delete-all').focus();
      return;
    }
    try {
      const result = await rpc('appPasswords.removeAll');
      notice(`Deleted ${result.removed} application password${result.removed === 1 ? '' : 's'}.`);
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
    const t = input.value.trim();
    input.value = '';
    if (!t) {
      say($('error'), 'Paste your access token first.');
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    me = null;
    start();
  }

  // ---------- wiring ----------

  document.addEventListener('DOMContentLoaded', () => {
    const fresh = takeTokenFromFragment();
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
      clearMessages();
      showSignin();
    });
    // A link opened in this tab again, or a token pasted into the address
    // bar of the open page.
    window.addEventListener('hashchange', () => {
      const t = takeTokenFromFragment();
      if (!t) return;
      clearMessages();
      arriveInTurn(t);
    });
    arriveInTurn(fresh);
  });
})();
