// Gantry console: a dependency-free single-page app served by gantry-console.
// Plain ES2020 module, hash routing (#/tree, #/tag?path=..., #/kpi, ...), the
// JSON API of docs/api.md and its Server-Sent Events live feed.
//
// Safety rule for this file: text from the API is only ever put into the page
// with textContent / text nodes (the h() helper), never as HTML.

const API = '/api/v1';
const STALE_AFTER_MS = 5 * 60 * 1000; // the console's default `stale_after`
const MAX_WATCH = 16; // paths per live feed (server limit)
const TREE_PAGE = 200; // children per namespace request
const SEARCH_LIMIT = 50;

// ---------------------------------------------------------------- DOM helpers

/** Creates an element. Strings and numbers among children become text nodes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') Object.assign(el.style, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

function $(sel, root = document) {
  return root.querySelector(sel);
}

let idCounter = 0;
function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

/** Runs fn at most once per `ms`, trailing call included. */
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  const t = () => {
    const now = Date.now();
    const wait = last + ms - now;
    if (wait <= 0) {
      last = now;
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    }
  };
  t.cancel = () => clearTimeout(timer);
  return t;
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// ----------------------------------------------------------------- formatting

const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const nf3s = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });

const UNIT_TEXT = { degC: '°C', degF: '°F', degK: 'K', percent: '%', pct: '%', count: '' };

function displayUnit(unit) {
  if (!unit) return '';
  return Object.prototype.hasOwnProperty.call(UNIT_TEXT, unit) ? UNIT_TEXT[unit] : unit;
}

function fmtNum(v, type) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return String(v);
  const isInt = type === 'int' || type === 'integer' || type === 'uint';
  if (isInt || (Number.isInteger(v) && Math.abs(v) < 1e15)) return nf0.format(v);
  const a = Math.abs(v);
  if (a >= 100) return nf1.format(v);
  if (a >= 1) return nf2.format(v);
  if (a === 0) return '0';
  return nf3s.format(v);
}

function withUnit(text, unit) {
  const u = displayUnit(unit);
  return u ? `${text} ${u}` : text;
}

function truncate(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

const KPI_UNITS = {
  oee: 'ratio', availability: 'ratio', effectiveness: 'ratio', quality: 'ratio', scrap_ratio: 'ratio',
  technical_efficiency: 'ratio', throughput: 'units/h', mtbf: 'min', mttr: 'min', energy_per_good_unit: 'kWh/unit',
};

/** How to show a published KPI (`<path>/_kpi/<name>`), which has no data contract. */
function kpiContract(path) {
  const m = /\/_kpi\/([a-z_]+)$/.exec(path || '');
  if (!m || !KPI_UNITS[m[1]]) return null;
  return KPI_UNITS[m[1]] === 'ratio' ? { type: 'ratio' } : { type: 'float', unit: KPI_UNITS[m[1]] };
}

/** A live value as text, with the contract's unit. */
function fmtValue(v, contract) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number' && contract && contract.type === 'ratio') return fmtPct(v);
  if (typeof v === 'number') return withUnit(fmtNum(v, contract && contract.type), contract && contract.unit);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return v === '' ? '(empty)' : truncate(v, 200);
  return truncate(JSON.stringify(v), 200);
}

function fmtPct(ratio) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return 'n/a';
  return `${nf1.format(ratio * 100)} %`;
}

function pad(n, w = 2) {
  return String(n).padStart(w, '0');
}

/** Local time, ISO-like: 2026-11-27 14:03:05 */
function fmtTime(ms, withSeconds = true) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  const d = new Date(Number(ms));
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withSeconds ? `${s}:${pad(d.getSeconds())}` : s;
}

function fmtAge(ms) {
  if (!Number.isFinite(ms)) return '';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 1) return 'now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ago`;
  return `${Math.floor(hrs / 24)} d ago`;
}

/** A duration in ms as "12.5 min", "3.2 h", "45 s". */
function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return '—';
  const a = Math.abs(ms);
  if (a < 60_000) return `${nf1.format(ms / 1000)} s`;
  if (a < 3 * 3_600_000) return `${nf1.format(ms / 60_000)} min`;
  if (a < 3 * 86_400_000) return `${nf1.format(ms / 3_600_000)} h`;
  return `${nf1.format(ms / 86_400_000)} d`;
}

/** A JSON field name as a label ("points_bad" → "Points bad"); data keys stay as they are. */
function humanKey(k) {
  const t = String(k);
  if (!/^[a-z][a-z0-9_]*$/.test(t)) return t;
  const words = t.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function lastSegment(path) {
  const i = path.lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

function parentPath(path) {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

function depthOf(path) {
  return path === '' ? 0 : path.split('/').length;
}

// ------------------------------------------------------------ quality & ages

const QUALITY = {
  good: { icon: '✓', text: 'good' },
  uncertain: { icon: '?', text: 'uncertain' },
  bad: { icon: '✕', text: 'bad' },
};

function qualityOf(live) {
  if (!live) return null;
  return QUALITY[live.quality] ? live.quality : 'good';
}

function setQuality(el, live) {
  const q = qualityOf(live);
  clear(el);
  el.className = `q ${q ? `q-${q}` : 'q-none'}`;
  if (!q) {
    el.append('no value');
    return;
  }
  el.append(h('span', { class: 'q-icon', 'aria-hidden': 'true' }, QUALITY[q].icon), QUALITY[q].text);
}

/** Client-side origin of a live value's age (robust to clock skew). */
function liveSince(live) {
  if (!live) return null;
  if (Number.isFinite(live.age_ms)) return Date.now() - live.age_ms;
  if (Number.isFinite(live.timestamp_ms)) return live.timestamp_ms;
  if (Number.isFinite(live.received_ms)) return live.received_ms;
  return null;
}

function setAge(el, live) {
  const since = liveSince(live);
  if (since === null) {
    delete el.dataset.since;
    el.textContent = '';
    el.classList.remove('stale');
    return;
  }
  el.dataset.since = String(since);
  if (live.stale) el.dataset.serverStale = '1';
  else delete el.dataset.serverStale;
  renderAge(el);
}

function renderAge(el) {
  const age = Date.now() - Number(el.dataset.since);
  const stale = el.dataset.serverStale === '1' || age > STALE_AFTER_MS;
  const text = stale ? `stale · ${fmtAge(age)}` : fmtAge(age);
  if (el.textContent !== text) el.textContent = text;
  el.classList.toggle('stale', stale);
}

// One ticker for every age on the page.
setInterval(() => {
  for (const el of document.querySelectorAll('.age[data-since]')) renderAge(el);
}, 1000);

// ------------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const CODE_FOR_STATUS = {
  400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found',
  429: 'too_many_requests', 503: 'unavailable', 500: 'internal',
};

function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined) continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  return q.toString();
}

async function api(path, { method = 'GET', body, signal, expectAuth = true } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, opts);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'The Gantry server cannot be reached. Check the connection and try again.');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  const data = text ? safeJson(text) : null;
  if (!res.ok) {
    const err = (data && data.error) || {};
    const msg = err.message || (data === null && text ? truncate(text.trim(), 300) : '') || `${res.status} ${res.statusText}`;
    const e = new ApiError(res.status, err.code || CODE_FOR_STATUS[res.status] || 'error', msg);
    if (res.status === 401 && expectAuth) sessionExpired();
    throw e;
  }
  return data;
}

function isAbort(e) {
  return e && e.name === 'AbortError';
}

// -------------------------------------------------------------------- notices

const NOTICE_TITLE = {
  403: 'Not allowed',
  404: 'Not found',
  429: 'Too many requests',
  503: 'Unavailable',
  0: 'No connection',
};

/** A visible message box; `kind` is info, warn or error. */
function notice(kind, title, message, extra) {
  const el = h('div', { class: `notice notice-${kind}`, role: kind === 'info' ? 'status' : 'alert', testid: 'notice' },
    h('span', { class: 'notice-icon', 'aria-hidden': 'true' }, kind === 'info' ? 'i' : '!'),
    h('div', { class: 'notice-body' }, title ? h('strong', null, title) : null, message ? h('p', null, message) : null, extra || null));
  return el;
}

function errorNotice(e, what) {
  if (e instanceof ApiError) {
    const kind = e.status === 403 || e.status === 404 ? 'warn' : 'error';
    const title = NOTICE_TITLE[e.status] || (what ? `Could not load ${what}` : 'Request failed');
    const msg = e.status === 403 ? `You do not have access${what ? ` to ${what}` : ''}: ${e.message}` : e.message;
    return notice(kind, title, msg);
  }
  return notice('error', what ? `Could not load ${what}` : 'Error', String((e && e.message) || e));
}

function toast(message) {
  const region = $('#toast-region');
  const t = h('div', { class: 'toast' }, message);
  region.append(t);
  setTimeout(() => t.remove(), 5000);
}

// ------------------------------------------------------------ session & router

const session = { me: null, returnTo: null };

function sessionExpired() {
  if (!session.me && currentRoute() && currentRoute().page === 'login') return;
  session.me = null;
  const r = currentRoute();
  if (r && r.page !== 'login') session.returnTo = location.hash;
  renderHeader();
  if (!r || r.page !== 'login') location.hash = '#/login';
}

/** Checks the session; false (and off to the login page) when it ended. */
async function checkSession() {
  try {
    session.me = await api('/me');
    return true;
  } catch (e) {
    return !(e instanceof ApiError && e.status === 401);
  }
}

function encodeParam(v) {
  return encodeURIComponent(v).replace(/%2F/gi, '/');
}

function href(page, params) {
  let s = `#/${page}`;
  if (params) {
    const parts = Object.entries(params)
      .filter(([, v]) => v !== null && v !== undefined && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeParam(String(v))}`);
    if (parts.length) s += `?${parts.join('&')}`;
  }
  return s;
}

function currentRoute() {
  const raw = location.hash.replace(/^#/, '');
  if (!raw.startsWith('/')) return null;
  const qi = raw.indexOf('?');
  const page = (qi < 0 ? raw.slice(1) : raw.slice(1, qi)) || defaultPage();
  const params = new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1));
  return { page, params };
}

/** Updates the address bar without a re-render. */
function replaceHash(hash) {
  if (location.hash !== hash) history.replaceState(history.state, '', hash);
}

function can(what) {
  return !!(session.me && session.me.can && session.me.can[what]);
}

function defaultPage() {
  if (!session.me || can('read')) return 'tree';
  if (can('audit')) return 'audit';
  if (can('users') || can('roles')) return 'access';
  return 'connectors';
}

const NAV = [
  { page: 'tree', label: 'Namespace', testid: 'nav-tree', show: () => can('read') },
  { page: 'kpi', label: 'KPIs', testid: 'nav-kpi', show: () => can('read') },
  { page: 'dead-letters', label: 'Dead letters', testid: 'nav-dead-letters', show: () => can('read') },
  { page: 'connectors', label: 'Connectors', testid: 'nav-connectors', show: () => can('read') || can('sys') },
  { page: 'audit', label: 'Audit', testid: 'nav-audit', show: () => can('audit') },
  { page: 'access', label: 'Access', testid: 'nav-access', show: () => can('users') || can('roles') },
];

function renderHeader() {
  const nav = $('#app-nav');
  const sess = $('#session');
  clear(nav);
  if (!session.me) {
    nav.hidden = true;
    sess.hidden = true;
    return;
  }
  const r = currentRoute();
  const page = r ? r.page : '';
  const navPage = page === 'tag' ? 'tree' : page;
  const ul = h('ul', { class: 'nav-list' });
  for (const item of NAV) {
    if (!item.show()) continue;
    ul.append(h('li', null, h('a', {
      href: href(item.page), testid: item.testid, class: 'nav-link',
      'aria-current': navPage === item.page ? 'page' : null,
    }, item.label)));
  }
  nav.append(ul);
  nav.hidden = false;
  const who = $('#who');
  clear(who);
  const roles = session.me.roles || [];
  who.append(
    h('span', { class: 'who-id', testid: 'identity' }, session.me.identity || '?'),
    h('span', { class: 'who-roles' }, roles.length ? roles.join(', ') : 'no roles'),
  );
  sess.hidden = false;
}

// A page gets a context; everything it opens is closed when it is left.
class PageContext {
  constructor(main) {
    this.main = main;
    this.ctl = new AbortController();
    this.disposers = [];
    this.disposed = false;
  }

  get signal() {
    return this.ctl.signal;
  }

  api(path, opts = {}) {
    return api(path, { ...opts, signal: this.ctl.signal });
  }

  onDispose(fn) {
    this.disposers.push(fn);
  }

  interval(fn, ms) {
    const t = setInterval(() => {
      if (!document.hidden) fn();
    }, ms);
    this.onDispose(() => clearInterval(t));
    return t;
  }

  dispose() {
    this.disposed = true;
    this.ctl.abort();
    for (const fn of this.disposers.splice(0)) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

let currentPage = null;
let firstRender = true;

async function render() {
  const r = currentRoute();
  if (!r) {
    // Not a route (e.g. an in-page anchor): stay.
    if (!location.hash) location.replace(`#/${defaultPage()}`);
    return;
  }
  if (!session.me && r.page !== 'login') {
    session.returnTo = location.hash;
    location.replace('#/login');
    return;
  }
  if (currentPage) currentPage.dispose();
  const main = $('#main');
  clear(main);
  renderHeader();
  const ctx = new PageContext(main);
  currentPage = ctx;
  const page = PAGES[r.page];
  document.body.dataset.page = r.page;
  if (!page) {
    main.append(h('h1', { class: 'page-title', tabindex: '-1' }, 'Page not found'),
      notice('warn', 'Unknown page', `There is no page “${r.page}”.`, h('p', null, h('a', { href: href(defaultPage()) }, 'Go to the start page'))));
    return;
  }
  const wasFirst = firstRender;
  firstRender = false;
  try {
    await page(ctx, r.params, { initial: wasFirst });
  } catch (e) {
    if (isAbort(e) || ctx.disposed) return;
    console.error(e);
    main.append(errorNotice(e));
  }
}

/** The page's heading; it takes the focus after a navigation. */
function pageTitle(ctx, text, opts = {}) {
  document.title = `${opts.docTitle || text} · Gantry`;
  const el = h('h1', { class: 'page-title', tabindex: '-1', testid: opts.testid || null }, text);
  if (!opts.noFocus) {
    queueMicrotask(() => {
      if (!ctx.disposed && document.activeElement === document.body) el.focus({ preventScroll: true });
    });
  }
  return el;
}

// ------------------------------------------------------------------ live feed

/**
 * The feed sends each change as a row [path, value, quality, timestamp_ms,
 * received_ms] with the server's clock in `now_ms`; the pages use the same
 * {path, live} objects the namespace API returns.
 */
function liveChanges(event, staleAfter) {
  const now = Number.isFinite(event.now_ms) ? event.now_ms : Date.now();
  const out = [];
  for (const row of event.changes) {
    if (!Array.isArray(row) || typeof row[0] !== 'string') continue;
    const [path, value, quality, timestampMs, receivedMs] = row;
    const basis = Number.isFinite(timestampMs) ? timestampMs : receivedMs;
    const age = Math.max(0, now - basis);
    out.push({
      path,
      live: {
        value,
        quality: quality || 'good',
        timestamp_ms: Number.isFinite(timestampMs) ? timestampMs : null,
        received_ms: receivedMs,
        age_ms: age,
        stale: age > staleAfter,
        retained: true,
      },
    });
  }
  return out;
}

/**
 * One Server-Sent Events stream for `paths` (at most MAX_WATCH). Calls
 * onChanges(changes) for every `changes` event, onStatus(state, hello)
 * with state = connecting | live | reconnecting | down, and onHello(again)
 * each time the feed starts. Closed with the page.
 */
function openLive(ctx, paths, { onChanges, onStatus = () => {}, onHello = () => {} }) {
  let es = null;
  let hellos = 0;
  let closed = false;
  let retry = null;
  let backoff = 2000;
  const list = paths.slice(0, MAX_WATCH);
  const connect = () => {
    if (closed) return;
    es = new EventSource(`${API}/live?${qs({ path: list })}`);
    onStatus('connecting');
    let staleAfter = 300_000;
    es.addEventListener('hello', (ev) => {
      backoff = 2000;
      hellos += 1;
      const hello = safeJson(ev.data);
      if (hello && Number.isFinite(hello.stale_after_ms)) staleAfter = hello.stale_after_ms;
      onStatus('live', hello);
      // Changes made before the feed (re)started are not replayed: let the page catch up.
      onHello(hellos > 1);
    });
    es.addEventListener('changes', (ev) => {
      const d = safeJson(ev.data);
      if (d && Array.isArray(d.changes)) onChanges(liveChanges(d, staleAfter), d);
    });
    es.onopen = () => onStatus('live');
    es.onerror = () => {
      if (closed) return;
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        onStatus('down');
        checkSession().then((ok) => {
          if (ok && !closed) {
            retry = setTimeout(connect, backoff);
            backoff = Math.min(backoff * 2, 60_000);
          }
        });
      } else {
        onStatus('reconnecting');
      }
    };
  };
  connect();
  const handle = {
    paths: list,
    close() {
      closed = true;
      clearTimeout(retry);
      if (es) es.close();
    },
  };
  ctx.onDispose(() => handle.close());
  return handle;
}

const LIVE_TEXT = {
  idle: 'Live: off',
  connecting: 'Live: connecting…',
  live: 'Live',
  reconnecting: 'Live: reconnecting…',
  down: 'Live: disconnected',
};

function liveBadge() {
  const el = h('span', { class: 'live-badge live-idle', role: 'status', testid: 'live-status' },
    h('span', { class: 'live-dot', 'aria-hidden': 'true' }), h('span', { class: 'live-text' }, LIVE_TEXT.idle));
  el.set = (state, detail) => {
    el.className = `live-badge live-${state}`;
    $('.live-text', el).textContent = LIVE_TEXT[state] + (detail ? ` ${detail}` : '');
  };
  return el;
}

/** The enterprises (namespace roots of kind enterprise), for system paths. */
async function enterprises(ctx) {
  try {
    const d = await ctx.api(`/namespace?${qs({ path: '', limit: 1000 })}`);
    const ents = (d.children || []).filter((c) => c.kind === 'enterprise').map((c) => c.path);
    return ents.length ? ents : (d.children || []).filter((c) => !c.path.startsWith('$')).map((c) => c.path).slice(0, MAX_WATCH);
  } catch (e) {
    if (isAbort(e)) throw e;
    return [];
  }
}

// ---------------------------------------------------------------------- login

async function pageLogin(ctx) {
  if (session.me) {
    location.replace(href(defaultPage()));
    return;
  }
  document.title = 'Log in · Gantry';
  const err = h('div', { class: 'login-error', role: 'alert', testid: 'login-error', hidden: true });
  const user = h('input', {
    id: 'login-username', name: 'username', type: 'text', autocomplete: 'username', required: true,
    autocapitalize: 'none', spellcheck: 'false', testid: 'login-username',
  });
  const pass = h('input', {
    id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
    testid: 'login-password',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit' }, 'Log in');
  const form = h('form', { class: 'login-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'login-username' }, 'User name'), user),
    h('div', { class: 'field' }, h('label', { for: 'login-password' }, 'Password'), pass),
    err,
    submit);
  const showError = (msg) => {
    err.textContent = msg;
    err.hidden = false;
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    if (!user.value.trim() || !pass.value) {
      showError('Enter your user name and password.');
      (user.value.trim() ? pass : user).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      await api('/login', { method: 'POST', body: { username: user.value.trim(), password: pass.value }, expectAuth: false });
      session.me = await api('/me');
      const to = session.returnTo && !session.returnTo.startsWith('#/login') ? session.returnTo : href(defaultPage());
      session.returnTo = null;
      location.hash = to;
    } catch (e) {
      if (ctx.disposed) return;
      showError(e instanceof ApiError ? e.message : String(e));
      pass.select();
      pass.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Log in';
    }
  });
  ctx.main.append(h('section', { class: 'login-card', 'aria-labelledby': 'login-title' },
    h('div', { class: 'login-brand' }, h('img', { src: '/assets/favicon.svg', alt: '', width: 40, height: 40 }),
      h('div', null, h('h1', { id: 'login-title' }, 'Gantry console'),
        h('p', { class: 'muted' }, 'Unified Namespace · historian · KPIs'))),
    form));
  user.focus();
}

async function logout() {
  try {
    await api('/logout', { method: 'POST', body: {}, expectAuth: false });
  } catch (e) {
    // The session may already be gone; log out locally anyway.
  }
  session.me = null;
  session.returnTo = null;
  // The next user of this tab starts from a clean tree.
  treeMemory.expanded.clear();
  treeMemory.focused = null;
  treeMemory.save();
  renderHeader();
  location.hash = '#/login';
}

// ------------------------------------------------------------- namespace tree

const store = {
  get(key, fallback) {
    try {
      const v = sessionStorage.getItem(`gantry.${key}`);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      sessionStorage.setItem(`gantry.${key}`, JSON.stringify(value));
    } catch {
      // Storage disabled: the tree just forgets its state.
    }
  },
};

// What stays between visits of the tree page (this browser tab only).
const treeMemory = {
  expanded: new Set(store.get('tree.expanded', [])),
  focused: store.get('tree.focused', null),
  save() {
    store.set('tree.expanded', [...this.expanded].slice(0, 500));
    store.set('tree.focused', this.focused);
  },
};

const VALUE_KINDS = new Set(['tag', 'topic']);
const reducedMotion = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;

function hasValue(node) {
  return !!node.live || VALUE_KINDS.has(node.kind);
}

function cssToken(s) {
  return String(s || '').toLowerCase().replace(/[^a-z0-9-]/g, '-');
}

/** Drops paths covered by another (an ancestor watches its subtree). */
function dropCovered(paths) {
  const sorted = [...new Set(paths)].sort();
  const out = [];
  for (const p of sorted) {
    if (!out.some((a) => p === a || p.startsWith(`${a}/`))) out.push(p);
  }
  return out;
}

/** At most MAX_WATCH paths: the deepest ones give way to their parents. */
function reduceWatch(paths) {
  let set = dropCovered(paths.filter((p) => p !== ''));
  while (set.length > MAX_WATCH) {
    const deepest = Math.max(...set.map(depthOf));
    if (deepest <= 1) {
      set = set.slice(0, MAX_WATCH);
      break;
    }
    set = dropCovered(set.map((p) => (depthOf(p) === deepest ? parentPath(p) : p)));
  }
  return set;
}

/** Text with every occurrence of the words marked. */
function highlighted(text, words) {
  const lower = text.toLowerCase();
  const marks = new Uint8Array(text.length);
  for (const w of words) {
    if (!w) continue;
    let i = lower.indexOf(w);
    while (i >= 0) {
      marks.fill(1, i, i + w.length);
      i = lower.indexOf(w, i + 1);
    }
  }
  const frag = document.createDocumentFragment();
  let start = 0;
  for (let i = 1; i <= text.length; i++) {
    if (i === text.length || marks[i] !== marks[start]) {
      const part = text.slice(start, i);
      frag.append(marks[start] ? h('mark', null, part) : document.createTextNode(part));
      start = i;
    }
  }
  return frag;
}

async function pageTree(ctx, params) {
  if (!can('read')) {
    ctx.main.append(pageTitle(ctx, 'Namespace'), notice('warn', 'Not allowed', 'Your roles do not allow reading plant data.'));
    return;
  }
  const revealPath = params.get('path');
  const title = pageTitle(ctx, 'Namespace', { noFocus: !!revealPath });
  const live = liveBadge();

  // Search
  const searchInput = h('input', {
    id: 'ns-search', type: 'search', testid: 'search-input', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'e.g. line-2 capper state', 'aria-describedby': 'ns-search-hint', 'aria-controls': 'ns-results',
  });
  const searchStatus = h('p', { class: 'search-status muted', role: 'status', 'aria-live': 'polite' });
  const results = h('ul', { id: 'ns-results', class: 'search-results', 'aria-label': 'Search results', hidden: true });
  const searchPanel = h('div', { class: 'panel search-panel', role: 'search' },
    h('label', { for: 'ns-search', class: 'label' }, 'Search the namespace'),
    searchInput,
    h('p', { id: 'ns-search-hint', class: 'hint' }, 'Every word must appear in the path. Arrow down to the results, Escape to clear.'),
    searchStatus, results);

  // Tree
  const treeEl = h('ul', { role: 'tree', class: 'tree', testid: 'tree', 'aria-label': 'Unified Namespace', 'aria-busy': 'true' });
  const treeHead = h('div', { class: 'tree-head', 'aria-hidden': 'true' },
    h('span', null, 'Name'), h('span', { class: 'th-kind' }, 'Kind'), h('span', { class: 'th-value' }, 'Value'),
    h('span', { class: 'th-q' }, 'Quality'), h('span', { class: 'th-age' }, 'Age'));
  const collapseAll = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Collapse all');
  ctx.main.append(
    h('div', { class: 'page-head' }, title, h('div', { class: 'page-tools' }, live, collapseAll)),
    searchPanel,
    h('div', { class: 'panel tree-panel' },
      h('p', { class: 'hint tree-hint', id: 'tree-hint' }, 'Arrow keys move and expand, Enter opens a tag.'),
      treeHead, treeEl));
  treeEl.setAttribute('aria-describedby', 'tree-hint');

  const nodes = new Map();
  const itemNode = new WeakMap();
  const root = {
    path: '', level: 0, expanded: true, loaded: false, children: [], nextAfter: null,
    group: treeEl, el: null, has_children: true, parent: null, loading: null,
  };
  const resultCells = new Map();

  function makeNode(c, parent) {
    return {
      path: c.path,
      name: c.name || lastSegment(c.path),
      kind: c.kind || 'topic',
      has_children: !!c.has_children,
      modeled: !!c.modeled,
      live: c.live || null,
      contract: c.contract || kpiContract(c.path),
      level: parent.level + 1,
      parent,
      children: [],
      expanded: false,
      loaded: false,
      nextAfter: null,
      group: null,
      el: null,
      row: null,
      cells: null,
      loading: null,
    };
  }

  function buildItem(node, pos) {
    const rowId = uid('tn');
    const li = h('li', {
      role: 'treeitem', class: `tnode tkind-${cssToken(node.kind)}`, tabindex: '-1', 'aria-level': node.level,
      'aria-posinset': pos, 'aria-labelledby': rowId, testid: 'tree-node', dataset: { path: node.path },
    });
    if (node.has_children) li.setAttribute('aria-expanded', 'false');
    li.style.setProperty('--level', String(node.level - 1));
    const row = h('div', { class: 'trow', id: rowId },
      h('span', { class: 'twisty', 'aria-hidden': 'true' }),
      h('span', { class: 'tname' }, node.name),
      h('span', { class: `kind kind-${cssToken(node.kind)}` }, node.kind),
      h('span', { class: 'tcells' }));
    li.append(row);
    node.el = li;
    node.row = row;
    itemNode.set(li, node);
    if (hasValue(node)) {
      paintLive(node, false);
      if (node.has_children) {
        row.insertBefore(h('a', { class: 'tlink', href: href('tag', { path: node.path }), tabindex: '-1', title: 'Open tag details' }, 'Details'), row.querySelector('.tcells'));
      }
    }
    if (node.has_children && treeMemory.expanded.has(node.path)) li.dataset.restore = '1';
    return li;
  }

  function ensureCells(node) {
    if (node.cells) return node.cells;
    const val = h('span', { class: 'tval', testid: 'tree-value', dataset: { path: node.path } });
    const q = h('span', { class: 'q' });
    const age = h('span', { class: 'age' });
    const unit = node.contract && node.contract.description ? node.contract.description : '';
    if (unit) val.title = unit;
    node.row.querySelector('.tcells').append(val, q, age);
    node.cells = { val, q, age, flip: false };
    return node.cells;
  }

  function paintCells(c, live, contract, flash) {
    const v = live ? live.value : null;
    const text = live ? fmtValue(v, contract) : '—';
    if (c.val.textContent !== text) {
      c.val.textContent = text;
      if (flash && !reducedMotion) {
        c.flip = !c.flip;
        c.val.classList.toggle('flash-a', c.flip);
        c.val.classList.toggle('flash-b', !c.flip);
      }
    }
    if (typeof v === 'string' && contract && contract.type === 'enum') c.val.dataset.state = cssToken(v);
    else delete c.val.dataset.state;
    setQuality(c.q, live);
    setAge(c.age, live);
  }

  function paintLive(node, flash) {
    paintCells(ensureCells(node), node.live, node.contract, flash);
  }

  function ensureGroup(node) {
    if (node.group) return node.group;
    node.group = h('ul', { role: 'group' });
    node.el.append(node.group);
    return node.group;
  }

  function statusRow(node, ...content) {
    const li = h('li', { role: 'none', class: 'tstatus' }, ...content);
    li.style.setProperty('--level', String(node.level));
    return li;
  }

  function buildMore(node) {
    const li = h('li', {
      role: 'treeitem', class: 'tmore', tabindex: '-1', 'aria-level': node.level + 1, testid: 'tree-more',
      dataset: { parent: node.path },
    }, h('div', { class: 'trow' }, h('span', { class: 'twisty', 'aria-hidden': 'true' }),
      h('span', { class: 'tname' }, `Load more… (${node.children.length} shown)`)));
    li.style.setProperty('--level', String(node.level));
    itemNode.set(li, { more: node });
    return li;
  }

  // aria-setsize: unknown (-1) while pages remain, the count once complete.
  function updateSetSize(node, firstNew) {
    const from = node.nextAfter ? firstNew : 0;
    const size = String(node.nextAfter ? -1 : node.children.length);
    for (let i = from; i < node.children.length; i++) node.children[i].el.setAttribute('aria-setsize', size);
  }

  function loadChildren(node, after = null) {
    if (node.loading) return node.loading;
    node.loading = (async () => {
      const group = ensureGroup(node);
      group.setAttribute('aria-busy', 'true');
      if (node.moreEl) {
        node.moreEl.remove();
        node.moreEl = null;
      }
      if (node.statusEl) {
        node.statusEl.remove();
        node.statusEl = null;
      }
      const spinner = statusRow(node, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading…');
      group.append(spinner);
      try {
        const d = await ctx.api(`/namespace?${qs({ path: node.path, limit: TREE_PAGE, after })}`);
        spinner.remove();
        const firstNew = node.children.length;
        const frag = document.createDocumentFragment();
        for (const c of d.children || []) {
          if (!c || typeof c.path !== 'string' || nodes.has(c.path)) continue;
          const n = makeNode(c, node);
          nodes.set(n.path, n);
          node.children.push(n);
          frag.append(buildItem(n, node.children.length));
        }
        group.append(frag);
        node.loaded = true;
        node.nextAfter = d.next_after || null;
        if (node.nextAfter) {
          node.moreEl = buildMore(node);
          group.append(node.moreEl);
        } else if (!node.children.length) {
          node.statusEl = statusRow(node, node === root ? 'The namespace is empty: nothing has been published yet.' : 'No children.');
          group.append(node.statusEl);
        }
        updateSetSize(node, firstNew);
        if (!treeEl.querySelector('[role="treeitem"][tabindex="0"]')) {
          const first = treeEl.querySelector('[role="treeitem"]');
          if (first) first.tabIndex = 0;
        }
      } catch (e) {
        spinner.remove();
        if (isAbort(e) || ctx.disposed) return;
        const retry = h('button', { type: 'button', class: 'btn btn-small' }, 'Retry');
        retry.addEventListener('click', () => loadChildren(node, after));
        node.statusEl = statusRow(node, errorNotice(e, node.path ? `the children of ${node.path}` : 'the namespace'), retry);
        group.append(node.statusEl);
      } finally {
        group.removeAttribute('aria-busy');
        node.loading = null;
      }
    })();
    return node.loading;
  }

  async function expand(node) {
    if (node === root || !node.has_children) return;
    if (!node.expanded) {
      node.expanded = true;
      node.el.setAttribute('aria-expanded', 'true');
      ensureGroup(node).hidden = false;
      treeMemory.expanded.add(node.path);
      treeMemory.save();
    }
    if (!node.loaded) await loadChildren(node);
    scheduleWatch();
  }

  function collapse(node) {
    if (node === root || !node.expanded) return;
    node.expanded = false;
    node.el.setAttribute('aria-expanded', 'false');
    if (node.group) {
      // Keep the tree reachable: the focus (and the tab stop) move up to the node.
      const hadFocus = node.group.contains(document.activeElement);
      const stop = node.group.querySelector('[role="treeitem"][tabindex="0"]');
      if (stop) stop.tabIndex = -1;
      if (stop || hadFocus) node.el.tabIndex = 0;
      node.group.hidden = true;
      if (hadFocus) node.el.focus({ preventScroll: true });
    }
    treeMemory.expanded.delete(node.path);
    treeMemory.save();
    scheduleWatch();
  }

  collapseAll.addEventListener('click', () => {
    for (const n of nodes.values()) if (n.expanded) collapse(n);
    treeMemory.expanded.clear();
    treeMemory.save();
    const first = treeEl.querySelector('[role="treeitem"]');
    if (first) focusItem(first);
  });

  // Live values: one feed for the shown, expanded nodes that have values below.
  let liveHandle = null;
  let watchKey = null;

  function isShown(node) {
    for (let p = node.parent; p && p !== root; p = p.parent) if (!p.expanded) return false;
    return true;
  }

  function updateWatch() {
    if (ctx.disposed) return;
    const want = [];
    for (const n of root.children) if (hasValue(n)) want.push(n.path);
    for (const path of treeMemory.expanded) {
      const n = nodes.get(path);
      if (!n || !n.expanded || !n.loaded || !isShown(n)) continue;
      if (n.children.some(hasValue)) want.push(n.path);
    }
    const paths = reduceWatch(want);
    const key = paths.join('\n');
    if (key === watchKey) return;
    watchKey = key;
    if (liveHandle) liveHandle.close();
    liveHandle = null;
    live.title = paths.length ? `Watching: ${paths.join(', ')}` : 'Expand a node with tags to see live values';
    live.dataset.watching = paths.join(' ');
    if (!paths.length) {
      live.set('idle');
      return;
    }
    const detail = `(${paths.length} ${paths.length === 1 ? 'path' : 'paths'})`;
    liveHandle = openLive(ctx, paths, {
      onChanges: applyChanges,
      onStatus: (s) => live.set(s, s === 'live' ? detail : ''),
      onHello: (again) => {
        if (again) refreshValues(paths);
      },
    });
  }

  /** After a reconnect: the current values of the watched nodes' children. */
  async function refreshValues(paths) {
    for (const p of paths) {
      const n = nodes.get(p);
      const parent = n && n.children.length ? n : (n ? n.parent : root);
      try {
        const d = await ctx.api(`/namespace?${qs({ path: parent.path, limit: TREE_PAGE })}`);
        for (const c of d.children || []) {
          const cn = nodes.get(c.path);
          if (cn && c.live) {
            cn.live = c.live;
            paintLive(cn, false);
          }
        }
      } catch (e) {
        if (isAbort(e) || ctx.disposed) return;
      }
    }
  }
  const scheduleWatch = debounce(updateWatch, 200);
  ctx.onDispose(() => scheduleWatch.cancel());

  function applyChanges(changes) {
    for (const c of changes) {
      if (!c || typeof c.path !== 'string') continue;
      const n = nodes.get(c.path);
      if (n) {
        n.live = c.live || null;
        paintLive(n, true);
      }
      const rc = resultCells.get(c.path);
      if (rc) paintCells(rc.cells, c.live || null, rc.contract, true);
    }
  }

  // Keyboard: the WAI-ARIA tree pattern with a roving tabindex.
  function parentItem(li) {
    const g = li.parentElement;
    if (!g || g.getAttribute('role') !== 'group') return null;
    return g.parentElement;
  }
  function sibling(li, dir) {
    let s = dir > 0 ? li.nextElementSibling : li.previousElementSibling;
    while (s && s.getAttribute('role') !== 'treeitem') s = dir > 0 ? s.nextElementSibling : s.previousElementSibling;
    return s;
  }
  function childItems(li) {
    if (li.getAttribute('aria-expanded') !== 'true') return [];
    const g = li.querySelector(':scope > ul[role="group"]');
    return g ? [...g.children].filter((c) => c.getAttribute('role') === 'treeitem') : [];
  }
  function nextVisible(li) {
    const kids = childItems(li);
    if (kids.length) return kids[0];
    for (let cur = li; cur; cur = parentItem(cur)) {
      const s = sibling(cur, 1);
      if (s) return s;
    }
    return null;
  }
  function lastVisible(li) {
    for (;;) {
      const kids = childItems(li);
      if (!kids.length) return li;
      li = kids[kids.length - 1];
    }
  }
  function prevVisible(li) {
    const s = sibling(li, -1);
    return s ? lastVisible(s) : parentItem(li);
  }
  function focusItem(li, scroll = true) {
    if (!li) return;
    for (const el of treeEl.querySelectorAll('[role="treeitem"][tabindex="0"]')) if (el !== li) el.tabIndex = -1;
    li.tabIndex = 0;
    li.focus({ preventScroll: true });
    if (scroll && li.firstElementChild) li.firstElementChild.scrollIntoView({ block: 'nearest' });
    const n = itemNode.get(li);
    if (n && n.path) {
      treeMemory.focused = n.path;
      treeMemory.save();
    }
  }

  async function loadMore(parent, viaKeyboard) {
    const before = parent.children.length;
    await loadChildren(parent, parent.nextAfter);
    const first = parent.children[before];
    if (first && (viaKeyboard || treeEl.contains(document.activeElement) || document.activeElement === document.body)) focusItem(first.el);
  }

  function activate(li, viaKeyboard) {
    const n = itemNode.get(li);
    if (!n) return;
    if (n.more) {
      loadMore(n.more, viaKeyboard);
      return;
    }
    if (viaKeyboard ? hasValue(n) : (!n.has_children && hasValue(n))) {
      location.hash = href('tag', { path: n.path });
    } else if (n.has_children) {
      if (n.expanded) collapse(n);
      else expand(n);
    }
  }

  let typed = '';
  let typedAt = 0;
  function typeAhead(li, ch) {
    const now = Date.now();
    typed = now - typedAt > 700 ? ch : typed + ch;
    typedAt = now;
    const all = [];
    for (let cur = treeEl.querySelector('[role="treeitem"]'); cur; cur = nextVisible(cur)) all.push(cur);
    const start = typed.length === 1 ? all.indexOf(li) + 1 : all.indexOf(li);
    for (let i = 0; i < all.length; i++) {
      const cand = all[(start + i) % all.length];
      const n = itemNode.get(cand);
      if (n && n.name && n.name.toLowerCase().startsWith(typed)) {
        focusItem(cand);
        return;
      }
    }
  }

  treeEl.addEventListener('keydown', (ev) => {
    const li = ev.target.closest('[role="treeitem"]');
    if (!li || !treeEl.contains(li) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const n = itemNode.get(li);
    const node = n && !n.more ? n : null;
    let handled = true;
    switch (ev.key) {
      case 'ArrowDown':
        focusItem(nextVisible(li));
        break;
      case 'ArrowUp':
        focusItem(prevVisible(li));
        break;
      case 'ArrowRight':
        if (node && node.has_children) {
          if (!node.expanded) expand(node);
          else {
            const kids = childItems(li);
            if (kids.length) focusItem(kids[0]);
          }
        }
        break;
      case 'ArrowLeft':
        if (node && node.expanded) collapse(node);
        else focusItem(parentItem(li));
        break;
      case 'Home':
        focusItem(treeEl.querySelector('[role="treeitem"]'));
        break;
      case 'End': {
        const tops = [...treeEl.children].filter((c) => c.getAttribute('role') === 'treeitem');
        if (tops.length) focusItem(lastVisible(tops[tops.length - 1]));
        break;
      }
      case 'Enter':
        activate(li, true);
        break;
      case ' ':
        if (node && node.has_children) {
          if (node.expanded) collapse(node);
          else expand(node);
        } else activate(li, true);
        break;
      case '*': {
        const par = parentItem(li);
        const sibs = par ? childItems(par) : [...treeEl.children].filter((c) => c.getAttribute('role') === 'treeitem');
        for (const s of sibs) {
          const sn = itemNode.get(s);
          if (sn && !sn.more && sn.has_children) expand(sn);
        }
        break;
      }
      default:
        if (ev.key.length === 1 && /\S/.test(ev.key)) typeAhead(li, ev.key.toLowerCase());
        else handled = false;
    }
    if (handled) {
      ev.preventDefault();
      ev.stopPropagation();
    }
  });

  treeEl.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) return;
    const li = ev.target.closest('[role="treeitem"]');
    if (!li || !treeEl.contains(li)) return;
    focusItem(li, false);
    activate(li, false);
  });

  // Search
  let searchCtl = null;
  ctx.onDispose(() => searchCtl && searchCtl.abort());
  const doSearch = async () => {
    const q = searchInput.value.trim();
    if (searchCtl) searchCtl.abort();
    resultCells.clear();
    if (!q) {
      clear(results);
      results.hidden = true;
      searchStatus.textContent = '';
      return;
    }
    searchCtl = new AbortController();
    const signal = searchCtl.signal;
    searchStatus.textContent = 'Searching…';
    try {
      const d = await api(`/namespace/search?${qs({ q, limit: SEARCH_LIMIT })}`, { signal });
      if (signal.aborted || ctx.disposed) return;
      const words = q.toLowerCase().split(/\s+/).filter(Boolean);
      clear(results);
      const list = d.results || [];
      for (const r of list) {
        const isValue = !!r.live || VALUE_KINDS.has(r.kind);
        const link = h('a', {
          class: 'result', testid: 'search-result', dataset: { path: r.path, kind: r.kind || '' },
          href: isValue ? href('tag', { path: r.path }) : href('tree', { path: r.path }),
        },
        h('span', { class: 'result-path' }, highlighted(r.path, words)),
        h('span', { class: `kind kind-${cssToken(r.kind)}` }, r.kind || 'topic'));
        if (isValue) {
          const cells = { val: h('span', { class: 'tval' }), q: h('span', { class: 'q' }), age: h('span', { class: 'age' }), flip: false };
          link.append(h('span', { class: 'tcells' }, cells.val, cells.q, cells.age));
          const rc = r.contract || kpiContract(r.path);
          paintCells(cells, r.live || null, rc, false);
          resultCells.set(r.path, { cells, contract: rc });
        }
        results.append(h('li', null, link));
      }
      results.hidden = list.length === 0;
      const n = list.length;
      searchStatus.textContent = n === 0 ? `Nothing matches “${q}”.`
        : `${n} ${n === 1 ? 'result' : 'results'}${d.truncated ? ' (first ones only: add words to narrow the search)' : ''}.`;
    } catch (e) {
      if (isAbort(e) || ctx.disposed) return;
      clear(results);
      results.hidden = false;
      results.append(h('li', null, errorNotice(e, 'the search')));
      searchStatus.textContent = '';
    }
  };
  const runSearch = debounce(doSearch, 250);
  ctx.onDispose(() => runSearch.cancel());
  searchInput.addEventListener('input', runSearch);
  searchInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      searchInput.value = '';
      runSearch.cancel();
      doSearch();
    } else if (ev.key === 'ArrowDown') {
      const first = results.querySelector('a');
      if (first) {
        ev.preventDefault();
        first.focus();
      }
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      runSearch.cancel();
      doSearch();
    }
  });
  results.addEventListener('keydown', (ev) => {
    const links = [...results.querySelectorAll('a')];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    if (ev.key === 'ArrowDown' && i < links.length - 1) links[i + 1].focus();
    else if (ev.key === 'ArrowUp') (i > 0 ? links[i - 1] : searchInput).focus();
    else if (ev.key === 'Escape') {
      searchInput.value = '';
      runSearch();
      searchInput.focus();
    } else return;
    ev.preventDefault();
  });
  results.addEventListener('click', (ev) => {
    const a = ev.target.closest('a.result');
    if (!a || a.dataset.kind === 'tag' || a.getAttribute('href').startsWith('#/tag')) return;
    ev.preventDefault();
    replaceHash(a.getAttribute('href'));
    reveal(a.dataset.path);
  });

  async function reveal(path) {
    if (!root.loaded) await loadChildren(root);
    const segs = path.split('/');
    let parent = root;
    let target = null;
    for (let i = 0; i < segs.length && !ctx.disposed; i++) {
      const p = segs.slice(0, i + 1).join('/');
      let n = nodes.get(p);
      for (let pages = 0; !n && parent.nextAfter && pages < 50; pages++) {
        await loadChildren(parent, parent.nextAfter);
        n = nodes.get(p);
      }
      if (!n) break;
      target = n;
      if (i < segs.length - 1) {
        await expand(n);
        if (!n.loaded) break;
      }
      parent = n;
    }
    if (ctx.disposed) return;
    if (target) {
      focusItem(target.el);
      target.row.classList.add('revealed');
      setTimeout(() => target.row && target.row.classList.remove('revealed'), 2500);
    }
    if (!target || target.path !== path) toast(`“${path}” was not found in the namespace.`);
  }

  // Initial load, then the nodes expanded on a previous visit.
  await loadChildren(root);
  treeEl.removeAttribute('aria-busy');
  const restore = [...treeMemory.expanded].sort((a, b) => depthOf(a) - depthOf(b)).slice(0, 200);
  const byDepth = new Map();
  for (const p of restore) {
    const d = depthOf(p);
    if (!byDepth.has(d)) byDepth.set(d, []);
    byDepth.get(d).push(p);
  }
  for (const d of [...byDepth.keys()].sort((a, b) => a - b)) {
    if (ctx.disposed) return;
    await Promise.all(byDepth.get(d).map((p) => {
      const n = nodes.get(p);
      return n && n.has_children ? expand(n) : null;
    }));
  }
  if (ctx.disposed) return;
  updateWatch();
  if (revealPath) {
    await reveal(revealPath);
  } else if (treeMemory.focused && nodes.has(treeMemory.focused)) {
    const n = nodes.get(treeMemory.focused);
    if (isShown(n)) {
      for (const el of treeEl.querySelectorAll('[role="treeitem"][tabindex="0"]')) el.tabIndex = -1;
      n.el.tabIndex = 0;
    }
  }
}

// --------------------------------------------------------------------- charts

const STATE_COLORS = {
  running: '#2e7d32', idle: '#8d99a6', starved: '#d4a000', blocked: '#ef6c00', faulted: '#c62828',
  changeover: '#1565c0', 'planned-stop': '#6a1b9a', '(bad)': '#263238', '(no data)': '#cfd5dd', '(unknown)': '#cfd5dd',
  true: '#2e7d32', false: '#8d99a6',
};
const PALETTE = ['#00838f', '#ad1457', '#6d4c41', '#9e9d24', '#283593', '#d84315', '#00695c', '#4527a0',
  '#558b2f', '#0277bd', '#c2185b', '#5d4037'];

function stateColors(states) {
  const map = new Map();
  let i = 0;
  for (const s of states) {
    if (STATE_COLORS[s]) map.set(s, STATE_COLORS[s]);
    else {
      map.set(s, PALETTE[i % PALETTE.length]);
      i += 1;
    }
  }
  return map;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  const f = n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10;
  return f * mag;
}

const TIME_STEPS = [
  1, 2, 5, 10, 15, 30].map((s) => s * 1000)
  .concat([1, 2, 5, 10, 15, 30].map((m) => m * 60_000))
  .concat([1, 2, 3, 6, 12].map((x) => x * 3_600_000))
  .concat([1, 2, 7, 14, 28].map((d) => d * 86_400_000));

function timeTicks(from, to, maxTicks) {
  const span = to - from;
  const step = TIME_STEPS.find((s) => span / s <= maxTicks) || TIME_STEPS[TIME_STEPS.length - 1];
  const off = new Date(from).getTimezoneOffset() * 60_000;
  const ticks = [];
  for (let t = Math.ceil((from - off) / step) * step + off; t <= to && ticks.length < 200; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, step) {
  const d = new Date(t);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (step >= 86_400_000) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (step < 60_000) return `${hm}:${pad(d.getSeconds())}`;
  return hm;
}

/**
 * A trend drawn on a canvas: min/max band with an average line (numeric), or
 * stacked time-in-state columns (states). Drag across it to zoom.
 */
class TrendChart {
  constructor({ onZoom }) {
    this.onZoom = onZoom;
    this.data = null;
    this.message = 'Loading…';
    this.geom = null;
    this.canvas = h('canvas', { class: 'chart-canvas', testid: 'trend-chart', role: 'img', 'aria-label': 'Trend chart' });
    this.sel = h('div', { class: 'chart-sel', hidden: true });
    this.cross = h('div', { class: 'chart-cross', hidden: true });
    this.tip = h('div', { class: 'chart-tip', hidden: true, 'aria-hidden': 'true' });
    this.wrap = h('div', { class: 'chart-wrap' }, this.canvas, this.sel, this.cross, this.tip);
    this.pending = false;
    this.ro = new ResizeObserver(() => this.redraw());
    this.ro.observe(this.wrap);
    this.drag = null;
    this.canvas.addEventListener('pointerdown', (ev) => this.down(ev));
    this.canvas.addEventListener('pointermove', (ev) => this.move(ev));
    this.canvas.addEventListener('pointerup', (ev) => this.up(ev));
    this.canvas.addEventListener('pointercancel', () => this.cancelDrag());
    this.canvas.addEventListener('pointerleave', () => {
      if (!this.drag) this.hideHover();
    });
  }

  destroy() {
    this.ro.disconnect();
  }

  setData(data) {
    this.data = data;
    this.message = null;
    this.redraw();
  }

  setMessage(msg) {
    this.message = msg;
    this.redraw();
  }

  /** Draws on the next animation frame (coalesces many updates). */
  redraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  xOf(t) {
    const g = this.geom;
    return g.left + ((t - g.from) / (g.to - g.from)) * g.w;
  }

  tOf(x) {
    const g = this.geom;
    return g.from + ((x - g.left) / g.w) * (g.to - g.from);
  }

  draw() {
    const c = this.canvas;
    const cssW = Math.max(200, this.wrap.clientWidth);
    const cssH = window.innerWidth <= 600 ? 240 : 320;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(cssW * dpr) || c.height !== Math.round(cssH * dpr)) {
      c.width = Math.round(cssW * dpr);
      c.height = Math.round(cssH * dpr);
      c.style.width = `${cssW}px`;
      c.style.height = `${cssH}px`;
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    g.fillStyle = '#ffffff';
    g.fillRect(0, 0, cssW, cssH);
    g.font = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    g.textBaseline = 'middle';
    const d = this.data;
    if (!d) {
      this.geom = null;
      g.fillStyle = '#4a5565';
      g.textAlign = 'center';
      g.fillText(this.message || '', cssW / 2, cssH / 2);
      return;
    }
    if (d.mode === 'state') this.drawState(g, d, cssW, cssH);
    else this.drawNumeric(g, d, cssW, cssH);
  }

  frame(g, d, cssW, cssH, yTicks, yLabel, unitText, yOf) {
    g.font = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    const labelW = Math.max(24, ...yTicks.map((t) => g.measureText(yLabel(t)).width));
    const geom = { left: Math.ceil(labelW) + 14, right: cssW - 12, top: 24, bottom: cssH - 30, from: d.from, to: d.to, yOf };
    geom.w = Math.max(10, geom.right - geom.left);
    geom.h = Math.max(10, geom.bottom - geom.top);
    this.geom = geom;
    // Recorded gaps
    for (const gap of d.gaps || []) {
      const x0 = Math.max(geom.left, this.xOf(gap.from_ms));
      const x1 = Math.min(geom.right, this.xOf(gap.to_ms === gap.from_ms ? gap.to_ms + 1 : gap.to_ms));
      if (x1 <= geom.left || x0 >= geom.right) continue;
      g.fillStyle = 'rgba(96,108,124,0.16)';
      g.fillRect(x0, geom.top, Math.max(2, x1 - x0), geom.h);
      if (x1 - x0 > 36) {
        g.fillStyle = '#4a5565';
        g.textAlign = 'center';
        g.fillText('gap', (x0 + x1) / 2, geom.top + 10);
      }
    }
    // Horizontal grid and value labels
    g.strokeStyle = '#e3e7ec';
    g.lineWidth = 1;
    g.fillStyle = '#3d4756';
    g.textAlign = 'right';
    for (const t of yTicks) {
      const y = Math.round(geom.yOf(t)) + 0.5;
      g.beginPath();
      g.moveTo(geom.left, y);
      g.lineTo(geom.right, y);
      g.stroke();
      g.fillText(yLabel(t), geom.left - 6, y);
    }
    // Time axis
    const { ticks, step } = timeTicks(d.from, d.to, Math.max(2, Math.floor(geom.w / 90)));
    g.textAlign = 'center';
    let lastRight = -Infinity;
    for (const t of ticks) {
      const x = Math.round(this.xOf(t)) + 0.5;
      g.strokeStyle = '#eef1f4';
      g.beginPath();
      g.moveTo(x, geom.top);
      g.lineTo(x, geom.bottom);
      g.stroke();
      const label = timeLabel(t, step);
      const w = g.measureText(label).width;
      if (x - w / 2 > lastRight + 8 && x + w / 2 <= cssW) {
        g.fillStyle = '#3d4756';
        g.fillText(label, x, geom.bottom + 14);
        lastRight = x + w / 2;
      }
    }
    g.strokeStyle = '#8a94a3';
    g.beginPath();
    g.moveTo(geom.left + 0.5, geom.top);
    g.lineTo(geom.left + 0.5, geom.bottom + 0.5);
    g.lineTo(geom.right, geom.bottom + 0.5);
    g.stroke();
    if (unitText) {
      g.fillStyle = '#3d4756';
      g.textAlign = 'left';
      g.fillText(unitText, 4, 10);
    }
    return geom;
  }

  drawNumeric(g, d, cssW, cssH) {
    const withData = d.buckets.filter((b) => b.count > 0 && Number.isFinite(b.min) && Number.isFinite(b.max));
    let lo = Infinity;
    let hi = -Infinity;
    for (const b of withData) {
      lo = Math.min(lo, b.min);
      hi = Math.max(hi, b.max);
    }
    if (Number.isFinite(d.holdValue)) {
      lo = Math.min(lo, d.holdValue);
      hi = Math.max(hi, d.holdValue);
    }
    if (!Number.isFinite(lo)) {
      lo = 0;
      hi = 1;
    }
    if (lo === hi) {
      const p = Math.abs(lo) * 0.05 || 1;
      lo -= p;
      hi += p;
    }
    const approxH = cssH - 54;
    const step = niceStep(hi - lo, Math.max(2, Math.floor(approxH / 44)));
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    const yTicks = [];
    for (let v = lo; v <= hi + step * 1e-6; v += step) yTicks.push(Number(v.toPrecision(12)));
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const ratio = d.type === 'ratio';
    const yFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: Math.min(6, ratio ? Math.max(0, decimals - 2) : decimals) });
    const yLabel = ratio ? (v) => `${yFmt.format(v * 100)} %` : (v) => yFmt.format(v);
    const top = 24;
    const bottom = cssH - 30;
    const geomY = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    const geom = this.frame(g, d, cssW, cssH, yTicks, yLabel, ratio ? '%' : displayUnit(d.unit), geomY);
    geom.lo = lo;
    geom.hi = hi;
    g.save();
    g.beginPath();
    g.rect(geom.left, geom.top - 2, geom.w, geom.h + 4);
    g.clip();
    if (!withData.length && !Number.isFinite(d.holdValue)) {
      g.fillStyle = '#4a5565';
      g.textAlign = 'center';
      g.fillText('No values recorded in this range', geom.left + geom.w / 2, geom.top + geom.h / 2);
      g.restore();
      return;
    }
    // Runs of consecutive buckets with data
    const runs = [];
    let run = [];
    for (const b of d.buckets) {
      if (b.count > 0 && Number.isFinite(b.min)) run.push(b);
      else if (run.length) {
        runs.push(run);
        run = [];
      }
    }
    if (run.length) runs.push(run);
    g.fillStyle = 'rgba(11,92,173,0.20)';
    for (const r of runs) {
      g.beginPath();
      if (r.length === 1) {
        const b = r[0];
        const x0 = this.xOf(b.start);
        const x1 = Math.max(x0 + 2, this.xOf(b.end));
        g.rect(x0, geomY(b.max), x1 - x0, Math.max(1, geomY(b.min) - geomY(b.max)));
      } else {
        r.forEach((b, i) => {
          const x = this.xOf((b.start + b.end) / 2);
          if (i === 0) g.moveTo(x, geomY(b.max));
          else g.lineTo(x, geomY(b.max));
        });
        for (let i = r.length - 1; i >= 0; i--) g.lineTo(this.xOf((r[i].start + r[i].end) / 2), geomY(r[i].min));
        g.closePath();
      }
      g.fill();
    }
    // Average line; a held (dashed) line across buckets without values.
    const inGap = (t0, t1) => (d.gaps || []).some((gp) => gp.from_ms < t1 && gp.to_ms > t0);
    g.strokeStyle = '#0b5cad';
    g.lineWidth = 2;
    g.lineJoin = 'round';
    let prev = null;
    for (const b of withData) {
      const x = this.xOf((b.start + b.end) / 2);
      const y = geomY(b.avg ?? (b.min + b.max) / 2);
      if (prev) {
        const adjacent = b.start <= prev.b.end;
        if (adjacent) {
          g.setLineDash([]);
          g.beginPath();
          g.moveTo(prev.x, prev.y);
          g.lineTo(x, y);
          g.stroke();
        } else if (!inGap(prev.b.end, b.start)) {
          g.setLineDash([4, 4]);
          g.beginPath();
          g.moveTo(prev.x, prev.y);
          g.lineTo(this.xOf(b.start), prev.y);
          g.lineTo(x, y);
          g.stroke();
        }
      } else if (withData.length === 1) {
        g.beginPath();
        g.moveTo(this.xOf(b.start), y);
        g.lineTo(Math.max(this.xOf(b.start) + 2, this.xOf(b.end)), y);
        g.stroke();
      }
      prev = { x, y, b };
    }
    // The value in force until now (live mode).
    if (Number.isFinite(d.holdValue) && Number.isFinite(d.holdUntil)) {
      const x0 = prev ? prev.x : geom.left;
      const y = geomY(d.holdValue);
      g.setLineDash([4, 4]);
      g.beginPath();
      g.moveTo(x0, prev ? prev.y : y);
      g.lineTo(x0, y);
      g.lineTo(this.xOf(d.holdUntil), y);
      g.stroke();
      g.setLineDash([]);
      g.fillStyle = '#0b5cad';
      g.beginPath();
      g.arc(this.xOf(d.holdUntil), y, 3.5, 0, Math.PI * 2);
      g.fill();
    }
    g.setLineDash([]);
    g.restore();
  }

  drawState(g, d, cssW, cssH) {
    const yTicks = [0, 25, 50, 75, 100];
    const top = 24;
    const bottom = cssH - 30;
    const yOf = (p) => bottom - (p / 100) * (bottom - top);
    const geom = this.frame(g, d, cssW, cssH, yTicks, (v) => `${v} %`, 'time in state', yOf);
    const any = d.buckets.some((b) => b.tis && Object.keys(b.tis).length);
    if (!any) {
      g.fillStyle = '#4a5565';
      g.textAlign = 'center';
      g.fillText('No states recorded in this range', geom.left + geom.w / 2, geom.top + geom.h / 2);
      return;
    }
    for (const b of d.buckets) {
      if (!b.tis) continue;
      const x0 = Math.max(geom.left, this.xOf(b.start));
      const x1 = Math.min(geom.right, this.xOf(b.end));
      if (x1 <= x0) continue;
      const w = x1 - x0 > 4 ? x1 - x0 - 1 : Math.max(1, x1 - x0);
      const total = Math.max(1, b.end - b.start);
      let y = geom.bottom;
      for (const s of d.order) {
        const ms = b.tis[s];
        if (!ms) continue;
        const hh = (ms / total) * geom.h;
        g.fillStyle = d.colors.get(s) || '#999';
        g.fillRect(x0, y - hh, w, hh);
        y -= hh;
      }
    }
  }

  bucketAt(t) {
    const d = this.data;
    if (!d) return null;
    for (const b of d.buckets) if (t >= b.start && t < b.end) return b;
    return null;
  }

  hover(x) {
    const g = this.geom;
    const d = this.data;
    if (!g || !d || x < g.left || x > g.right) {
      this.hideHover();
      return;
    }
    const t = this.tOf(x);
    this.cross.hidden = false;
    this.cross.style.left = `${x}px`;
    this.cross.style.top = `${g.top}px`;
    this.cross.style.height = `${g.h}px`;
    const b = this.bucketAt(t);
    clear(this.tip);
    this.tip.append(h('div', { class: 'tip-time' }, b ? `${fmtTime(b.start)} – ${fmtTime(b.end).slice(11)}` : fmtTime(t)));
    if (b && d.mode === 'numeric' && b.count > 0) {
      const f = (v) => fmtValue(v, { unit: d.unit, type: d.type === 'ratio' ? 'ratio' : null });
      this.tip.append(h('div', null, `avg ${f(b.avg)}`), h('div', null, `min ${f(b.min)} · max ${f(b.max)}`),
        h('div', { class: 'muted' }, `${nf0.format(b.count)} ${b.count === 1 ? 'value' : 'values'}${b.bad_count ? `, ${b.bad_count} bad` : ''}`));
    } else if (b && d.mode === 'state' && b.tis) {
      const total = Math.max(1, b.end - b.start);
      for (const s of d.order) {
        if (!b.tis[s]) continue;
        this.tip.append(h('div', null, h('span', { class: 'swatch', style: { background: d.colors.get(s) } }),
          `${s}: ${fmtDuration(b.tis[s])} (${nf1.format((b.tis[s] / total) * 100)} %)`));
      }
    } else {
      this.tip.append(h('div', { class: 'muted' }, 'no values'));
    }
    this.tip.hidden = false;
    const tw = this.tip.offsetWidth;
    const left = x + 12 + tw > this.wrap.clientWidth ? x - 12 - tw : x + 12;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${g.top + 4}px`;
  }

  hideHover() {
    this.cross.hidden = true;
    this.tip.hidden = true;
  }

  localX(ev) {
    const r = this.canvas.getBoundingClientRect();
    return ev.clientX - r.left;
  }

  down(ev) {
    if (!this.geom || ev.button !== 0) return;
    const x = this.localX(ev);
    if (x < this.geom.left || x > this.geom.right) return;
    this.drag = { x0: x, x1: x, id: ev.pointerId };
    this.canvas.setPointerCapture(ev.pointerId);
    this.hover(x);
  }

  move(ev) {
    const x = this.localX(ev);
    if (this.drag) {
      const g = this.geom;
      this.drag.x1 = Math.min(g.right, Math.max(g.left, x));
      const a = Math.min(this.drag.x0, this.drag.x1);
      const b = Math.max(this.drag.x0, this.drag.x1);
      this.sel.hidden = b - a < 2;
      this.sel.style.left = `${a}px`;
      this.sel.style.width = `${b - a}px`;
      this.sel.style.top = `${g.top}px`;
      this.sel.style.height = `${g.h}px`;
    }
    this.hover(x);
  }

  up(ev) {
    if (!this.drag) return;
    const { x0, x1 } = this.drag;
    this.cancelDrag();
    if (this.canvas.hasPointerCapture(ev.pointerId)) this.canvas.releasePointerCapture(ev.pointerId);
    if (Math.abs(x1 - x0) >= 6 && this.geom) {
      const a = this.tOf(Math.min(x0, x1));
      const b = this.tOf(Math.max(x0, x1));
      if (b - a >= 1000) this.onZoom(Math.round(a), Math.round(b));
    }
  }

  cancelDrag() {
    this.drag = null;
    this.sel.hidden = true;
  }
}

// ------------------------------------------------------------------ tag page

const PRESETS = [
  ['15m', 15 * 60_000], ['1h', 3_600_000], ['8h', 8 * 3_600_000], ['24h', 24 * 3_600_000], ['7d', 7 * 86_400_000],
];
const STATE_TYPES = new Set(['enum', 'string', 'bool', 'boolean', 'text']);

/** The parsed object when a value is a JSON document (a health record, …), else null. */
function jsonDocument(v) {
  if (typeof v !== 'string' || !/^\s*[[{]/.test(v)) return null;
  const d = safeJson(v);
  return d && typeof d === 'object' ? d : null;
}

function trendMode(tag) {
  const t = tag.contract && tag.contract.type;
  if (t) return STATE_TYPES.has(String(t).toLowerCase()) ? 'state' : 'numeric';
  const v = tag.live ? tag.live.value : null;
  return typeof v === 'string' || typeof v === 'boolean' ? 'state' : 'numeric';
}

function toLocalInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function dl(rows, cls = 'kv') {
  const el = h('dl', { class: cls });
  for (const [k, v] of rows) {
    if (v === undefined) continue;
    el.append(h('div', { class: 'kv-row' }, h('dt', null, k), h('dd', null, v === null || v === '' ? '—' : v)));
  }
  return el;
}

function breadcrumb(path, linkFor) {
  const segs = path.split('/');
  const ol = h('ol');
  segs.forEach((s, i) => {
    const p = segs.slice(0, i + 1).join('/');
    ol.append(h('li', null, i === segs.length - 1 ? h('span', { 'aria-current': 'page' }, s) : h('a', { href: linkFor(p) }, s)));
  });
  return h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, ol);
}

async function pageTag(ctx, params) {
  const path = params.get('path');
  if (!path) {
    ctx.main.append(pageTitle(ctx, 'Tag'), notice('warn', 'No tag selected', 'Open a tag from the namespace tree or the search.'));
    return;
  }
  const name = lastSegment(path);
  const title = pageTitle(ctx, name, { testid: 'tag-title', docTitle: path });
  ctx.main.append(breadcrumb(path, (p) => href('tree', { path: p })),
    h('div', { class: 'page-head' }, h('div', null, title, h('p', { class: 'path-line' }, h('code', { class: 'path' }, path))),
      h('div', { class: 'page-tools' }, h('a', { class: 'btn btn-quiet', href: href('tree', { path }) }, 'Show in tree'))));
  const body = h('div', { class: 'tag-body' }, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(body);
  let tag;
  try {
    tag = await ctx.api(`/tag?${qs({ path })}`);
  } catch (e) {
    if (isAbort(e)) return;
    clear(body).append(errorNotice(e, path));
    return;
  }
  clear(body);
  const shown = tag.contract || kpiContract(path);

  // Live value
  const valueEl = h('div', { class: 'big-value', testid: 'tag-value' });
  const docEl = h('pre', { class: 'json-doc', hidden: true, tabindex: '0', 'aria-label': 'The JSON document' });
  const qualityEl = h('span', { class: 'q', testid: 'tag-quality' });
  const ageEl = h('span', { class: 'age' });
  const tsEl = h('span');
  const tagLive = liveBadge();
  const liveBox = h('section', { class: 'panel card live-card', 'aria-labelledby': 'live-h' },
    h('div', { class: 'card-head' }, h('h2', { id: 'live-h' }, 'Current value'), tagLive),
    valueEl, docEl, h('p', { class: 'live-meta' }, qualityEl, ageEl),
    dl([['Source time', tsEl]], 'kv kv-compact'));
  function paintTagLive() {
    const live = tag.live;
    const doc = live ? jsonDocument(live.value) : null;
    docEl.hidden = !doc;
    if (doc) docEl.textContent = truncate(JSON.stringify(doc, null, 2), 20000);
    valueEl.textContent = live ? (doc ? 'JSON document' : fmtValue(live.value, shown)) : 'No value yet';
    valueEl.classList.toggle('is-doc', !!doc);
    if (live && typeof live.value === 'string' && tag.contract && tag.contract.type === 'enum') valueEl.dataset.state = cssToken(live.value);
    else delete valueEl.dataset.state;
    setQuality(qualityEl, live);
    setAge(ageEl, live);
    const when = live && Number.isFinite(live.timestamp_ms) ? fmtTime(live.timestamp_ms) : (live ? `received ${fmtTime(live.received_ms)}` : '—');
    tsEl.textContent = live ? `${when}${live.retained ? ' · retained' : ''}` : '—';
  }
  paintTagLive();

  // Contract
  const k = tag.contract;
  const contractBox = h('section', { class: 'panel card', 'aria-labelledby': 'contract-h' }, h('h2', { id: 'contract-h' }, 'Data contract'));
  if (k) {
    const enumVals = Array.isArray(k.enum) && k.enum.length
      ? h('ul', { class: 'chips' }, k.enum.map((v) => h('li', { class: 'chip', dataset: { state: cssToken(v) } }, String(v)))) : undefined;
    contractBox.append(dl([
      ['Type', k.type || '—'],
      ['Unit', k.unit ? displayUnit(k.unit) || k.unit : '—'],
      ['Minimum', k.min === null || k.min === undefined ? '—' : fmtNum(k.min)],
      ['Maximum', k.max === null || k.max === undefined ? '—' : fmtNum(k.max)],
      ['Values', enumVals],
      ['Writable', k.writable ? (k.two_person ? 'yes, with a second person’s approval' : 'yes') : 'no'],
      ['Description', k.description || undefined],
    ]));
  } else if (shown) {
    contractBox.append(h('p', { class: 'muted' }, `A KPI computed and published by Gantry (${shown.type === 'ratio' ? 'a ratio, shown as a percentage' : shown.unit}); no data contract.`));
    if (tag.kpi_unit || parentPath(parentPath(path))) {
      contractBox.append(h('p', null, h('a', { href: href('kpi', { path: tag.kpi_unit || parentPath(parentPath(path)), explain: lastSegment(path) }) }, 'How this KPI is computed')));
    }
  } else {
    contractBox.append(h('p', { class: 'muted' }, 'No data contract: this topic is not in the plant model.'));
  }

  // Source, equipment, KPIs
  const srcRows = [];
  srcRows.push(['Kind', tag.kind || '—']);
  if (tag.source) srcRows.push(['Source', `${tag.source.connector || '?'} · ${tag.source.name || '?'}`]);
  else srcRows.push(['Source', 'MQTT (no connector configured for it)']);
  if (tag.equipment) {
    srcRows.push(['Equipment', h('a', { href: href('tree', { path: tag.equipment.path }) }, tag.equipment.path)]);
    if (tag.equipment.class) srcRows.push(['Class', tag.equipment.class]);
    if (tag.equipment.description) srcRows.push(['Description', tag.equipment.description]);
  }
  if (tag.kpi_unit) srcRows.push(['KPIs', h('a', { href: href('kpi', { path: tag.kpi_unit }) }, `KPIs of ${tag.kpi_unit}`)]);
  const srcBox = h('section', { class: 'panel card', 'aria-labelledby': 'src-h' }, h('h2', { id: 'src-h' }, 'Source & equipment'), dl(srcRows));
  if (tag.dead_letter) {
    const dlq = tag.dead_letter;
    srcBox.append(notice('warn', 'Last refused message', `${fmtTime(dlq.received_ms)}: ${dlq.reason || 'refused'}${dlq.rule ? ` (rule ${dlq.rule})` : ''}${dlq.client_id ? `, client ${dlq.client_id}` : ''}`,
      h('p', null, h('a', { href: href('dead-letters', { path: dlq.dlq_topic || '' }) }, 'See the dead letters'))));
  }
  body.append(h('div', { class: 'card-grid' }, liveBox, contractBox, srcBox));

  // Trend
  let mode = trendMode(tag);
  let range = PRESETS.some(([id]) => id === store.get('tag.preset', '1h')) ? { preset: store.get('tag.preset', '1h') } : { preset: '1h' };
  let zoomBase = null;
  let chartData = null;
  let rawRows = null;
  const chart = new TrendChart({
    onZoom: (a, b) => {
      if (!zoomBase) zoomBase = range;
      range = { from: a, to: b };
      loadTrend();
    },
  });
  ctx.onDispose(() => chart.destroy());
  const presetBtns = PRESETS.map(([id]) => h('button', { type: 'button', class: 'btn seg', testid: `range-preset-${id}`, dataset: { preset: id } }, id));
  const fromIn = h('input', { type: 'datetime-local', id: 'range-from', testid: 'range-from' });
  const toIn = h('input', { type: 'datetime-local', id: 'range-to', testid: 'range-to' });
  const applyBtn = h('button', { type: 'submit', class: 'btn' }, 'Apply');
  const resetZoom = h('button', { type: 'button', class: 'btn', testid: 'reset-zoom', disabled: true }, 'Reset zoom');
  const rangeForm = h('form', { class: 'range-form', 'aria-label': 'Custom time range' },
    h('div', { class: 'field-inline' }, h('label', { for: 'range-from' }, 'From'), fromIn),
    h('div', { class: 'field-inline' }, h('label', { for: 'range-to' }, 'To'), toIn), applyBtn);
  const legend = h('div', { class: 'chart-legend' });
  const chartInfo = h('p', { class: 'chart-info muted', role: 'status' });
  const chartNotice = h('div');
  const trendBox = h('section', { class: 'panel trend-panel', 'aria-labelledby': 'trend-h' },
    h('div', { class: 'card-head' }, h('h2', { id: 'trend-h' }, 'Trend'),
      h('div', { class: 'range-bar' },
        h('div', { class: 'seg-group', role: 'group', 'aria-label': 'Time range presets' }, presetBtns),
        rangeForm, resetZoom)),
    chartNotice, chart.wrap, legend, chartInfo,
    h('p', { class: 'hint' }, 'Drag across the chart to zoom in; hover or touch it to read values.'));
  body.append(trendBox);

  function currentRange() {
    if (range.preset) {
      const span = PRESETS.find(([id]) => id === range.preset)[1];
      const to = Date.now();
      return { from: to - span, to, live: true };
    }
    return { from: range.from, to: range.to, live: false };
  }

  function syncControls() {
    for (const b of presetBtns) b.setAttribute('aria-pressed', String(b.dataset.preset === range.preset));
    const r = currentRange();
    fromIn.value = toLocalInput(r.from);
    toIn.value = toLocalInput(r.to);
    resetZoom.disabled = !zoomBase;
  }

  presetBtns.forEach((b) => b.addEventListener('click', () => {
    range = { preset: b.dataset.preset };
    zoomBase = null;
    store.set('tag.preset', range.preset);
    loadTrend();
  }));
  rangeForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const a = new Date(fromIn.value).getTime();
    const b = new Date(toIn.value).getTime();
    clear(chartNotice);
    if (!Number.isFinite(a) || !Number.isFinite(b) || b <= a) {
      chartNotice.append(notice('warn', 'Invalid range', '“From” must be a valid time before “To”.'));
      return;
    }
    range = { from: a, to: b };
    zoomBase = null;
    loadTrend();
  });
  resetZoom.addEventListener('click', () => {
    if (!zoomBase) return;
    range = zoomBase;
    zoomBase = null;
    loadTrend();
  });

  let seq = 0;
  async function loadTrend() {
    const my = ++seq;
    syncControls();
    clear(chartNotice);
    const r = currentRange();
    const numeric = mode === 'numeric';
    const width = chart.wrap.clientWidth || 800;
    const maxBuckets = numeric ? 600 : Math.max(24, Math.min(240, Math.floor(width / 6)));
    chart.setMessage('Loading…');
    chart.data = null;
    try {
      const d = await ctx.api(`/history/aggregate?${qs({
        path, from: Math.round(r.from), to: Math.round(r.to), bucket: 'auto',
        agg: numeric ? 'min,max,avg' : 'time-in-state', max_buckets: maxBuckets,
      })}`);
      if (my !== seq || ctx.disposed) return;
      const series = (d.series || []).find((s) => s.topic === path) || (d.series || [])[0] || null;
      if (series && numeric && series.value_type === 'string') {
        mode = 'state';
        loadTrend();
        return;
      }
      const bucketMs = d.bucket_ms || (series && series.buckets[0] ? series.buckets[0].end_ms - series.buckets[0].start_ms : 60_000);
      const buckets = (series ? series.buckets : []).map((b) => ({
        start: b.start_ms, end: b.end_ms, count: b.count || 0, bad_count: b.bad_count || 0,
        min: b.min ?? null, max: b.max ?? null, avg: b.avg ?? null, tis: b.time_in_state || null,
      }));
      chartData = {
        mode, from: r.from, to: r.to, live: r.live, bucketMs, buckets, gaps: d.gaps || [],
        unit: shown ? shown.unit : null, type: shown ? shown.type : null,
        anchor: buckets.length ? buckets[0].start : Math.floor(r.from / bucketMs) * bucketMs,
      };
      if (mode === 'state') prepareStates();
      else updateHold();
      chart.setData(chartData);
      describe(series);
    } catch (e) {
      if (isAbort(e) || my !== seq || ctx.disposed) return;
      chart.setMessage('No chart');
      chartNotice.append(errorNotice(e, 'the history of this tag'));
      clear(legend);
      chartInfo.textContent = '';
    }
  }

  function prepareStates() {
    const totals = new Map();
    for (const b of chartData.buckets) {
      for (const [s, ms] of Object.entries(b.tis || {})) totals.set(s, (totals.get(s) || 0) + ms);
    }
    if (tag.live && tag.live.value !== null && tag.live.value !== undefined && !totals.has(String(tag.live.value))) totals.set(String(tag.live.value), 0);
    const enumOrder = (tag.contract && Array.isArray(tag.contract.enum)) ? tag.contract.enum.map(String) : [];
    const order = [...totals.keys()].sort((a, b) => {
      const ia = enumOrder.indexOf(a);
      const ib = enumOrder.indexOf(b);
      if (ia >= 0 && ib >= 0) return ia - ib;
      if (ia >= 0 || ib >= 0) return ia >= 0 ? -1 : 1;
      return totals.get(b) - totals.get(a);
    });
    chartData.order = order;
    chartData.totals = totals;
    chartData.colors = stateColors(order);
  }

  function updateHold() {
    if (!chartData || chartData.mode !== 'numeric') return;
    const v = tag.live ? tag.live.value : null;
    if (chartData.live && typeof v === 'number') {
      chartData.holdValue = v;
      chartData.holdUntil = chartData.to;
    } else {
      chartData.holdValue = null;
    }
  }

  function describe(series) {
    clear(legend);
    const d = chartData;
    const rangeText = `${fmtTime(d.from, false)} to ${fmtTime(d.to, false)}`;
    if (d.mode === 'numeric') {
      const withData = d.buckets.filter((b) => b.count > 0 && Number.isFinite(b.min));
      legend.append(h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-line', 'aria-hidden': 'true' }), 'average'),
        h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-band', 'aria-hidden': 'true' }), 'min – max'),
        h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-dash', 'aria-hidden': 'true' }), 'value held (no new sample)'));
      if (withData.length) {
        const lo = Math.min(...withData.map((b) => b.min));
        const hi = Math.max(...withData.map((b) => b.max));
        const n = withData.reduce((a, b) => a + b.count, 0);
        const avg = withData.reduce((a, b) => a + (b.avg ?? 0) * b.count, 0) / Math.max(1, n);
        const f = (v) => fmtValue(v, { unit: shown ? shown.unit : null, type: shown && shown.type === 'ratio' ? 'ratio' : null });
        chart.canvas.setAttribute('aria-label', `Trend of ${name} from ${rangeText}: minimum ${f(lo)}, maximum ${f(hi)}, average ${f(avg)}, ${n} values.`);
        legend.append(h('span', { class: 'legend-stats' }, `min ${f(lo)} · avg ${f(avg)} · max ${f(hi)} · ${nf0.format(n)} values`));
      } else {
        chart.canvas.setAttribute('aria-label', `Trend of ${name} from ${rangeText}: no values recorded.`);
      }
    } else {
      const total = [...d.totals.values()].reduce((a, b) => a + b, 0) || 1;
      const ul = h('ul', { class: 'state-legend', 'aria-label': 'Time in state' });
      const parts = [];
      for (const s of d.order) {
        const ms = d.totals.get(s) || 0;
        const pct = (ms / total) * 100;
        ul.append(h('li', null, h('span', { class: 'swatch', 'aria-hidden': 'true', style: { background: d.colors.get(s) } }),
          h('span', { class: 'state-name' }, s === '' ? '(empty)' : s), h('span', { class: 'state-time' }, `${fmtDuration(ms)} · ${nf1.format(pct)} %`)));
        parts.push(`${s || '(empty)'} ${nf1.format(pct)} %`);
      }
      legend.append(ul);
      chart.canvas.setAttribute('aria-label', `Time in state of ${name} from ${rangeText}: ${parts.join(', ') || 'no states recorded'}.`);
    }
    const src = series ? `${series.source || 'raw'}` : 'no series';
    chartInfo.textContent = `${rangeText} · buckets of ${fmtDuration(d.bucketMs)} · from ${src}${d.gaps.length ? ` · ${d.gaps.length} recording ${d.gaps.length === 1 ? 'gap' : 'gaps'}` : ''}${d.live ? ' · live' : ''}`;
  }

  // Live extension of the chart
  function bucketFor(ts) {
    const d = chartData;
    const start = d.anchor + Math.floor((ts - d.anchor) / d.bucketMs) * d.bucketMs;
    const last = d.buckets[d.buckets.length - 1];
    if (!last || last.start < start) {
      const b = { start, end: start + d.bucketMs, count: 0, bad_count: 0, min: null, max: null, avg: null, tis: d.mode === 'state' ? {} : null };
      d.buckets.push(b);
      return b;
    }
    for (let i = d.buckets.length - 1; i >= 0; i--) if (d.buckets[i].start === start) return d.buckets[i];
    return null;
  }

  function slide(now) {
    const d = chartData;
    const span = d.to - d.from;
    d.to = now;
    d.from = now - span;
    while (d.buckets.length && d.buckets[0].end <= d.from) d.buckets.shift();
  }

  let stateNow = tag.live ? { state: String(tag.live.value), at: Date.now() } : null;

  function addStateTime(state, t0, t1) {
    const d = chartData;
    let t = t0;
    while (t < t1) {
      const b = bucketFor(t);
      if (!b) break;
      const end = Math.min(t1, b.end);
      if (!b.tis) b.tis = {};
      b.tis[state] = (b.tis[state] || 0) + (end - t);
      if (!d.totals.has(state)) {
        d.totals.set(state, 0);
        d.order.push(state);
        d.colors = stateColors(d.order);
      }
      d.totals.set(state, d.totals.get(state) + (end - t));
      t = end;
    }
  }

  function onLive(change) {
    tag.live = change.live || null;
    paintTagLive();
    const d = chartData;
    if (d && d.live && tag.live) {
      const now = Date.now();
      const ts = Number.isFinite(tag.live.timestamp_ms) ? Math.min(tag.live.timestamp_ms, now) : now;
      if (d.mode === 'numeric' && typeof tag.live.value === 'number' && ts >= d.from) {
        const b = bucketFor(ts);
        if (b) {
          const v = tag.live.value;
          b.count += 1;
          b.min = b.min === null ? v : Math.min(b.min, v);
          b.max = b.max === null ? v : Math.max(b.max, v);
          b.avg = b.avg === null ? v : b.avg + (v - b.avg) / b.count;
          if (tag.live.quality === 'bad') b.bad_count += 1;
        }
        slide(now);
        updateHold();
        chart.redraw();
      } else if (d.mode === 'state') {
        if (stateNow) addStateTime(stateNow.state, stateNow.at, now);
        stateNow = { state: String(tag.live.value), at: now };
        slide(now);
        chart.redraw();
      }
    }
    if (rawRows) prependRaw({ ts_ms: tag.live && tag.live.timestamp_ms, value: tag.live && tag.live.value, quality: tag.live && tag.live.quality });
  }

  ctx.interval(() => {
    const d = chartData;
    if (!d || !d.live) return;
    const now = Date.now();
    if (d.mode === 'state' && stateNow) {
      addStateTime(stateNow.state, stateNow.at, now);
      stateNow.at = now;
    }
    slide(now);
    updateHold();
    chart.redraw();
  }, 2000);

  openLive(ctx, [path], {
    onChanges: (changes) => {
      for (const c of changes) if (c && c.path === path) onLive(c);
    },
    onStatus: (s) => tagLive.set(s),
    onHello: async (again) => {
      if (!again) return;
      try {
        const t = await ctx.api(`/tag?${qs({ path })}`);
        tag.live = t.live;
        paintTagLive();
        if (chartData && chartData.live) loadTrend();
      } catch (e) {
        // The next change brings the value anyway.
      }
    },
  });

  // Latest raw values
  const rawBody = h('div', { class: 'raw-body' });
  const rawDetails = h('details', { class: 'panel raw-panel', testid: 'raw-values' },
    h('summary', null, h('h2', { class: 'summary-title' }, 'Latest raw values')), rawBody);
  rawDetails.open = !!store.get('tag.rawOpen', false);
  rawDetails.addEventListener('toggle', () => {
    store.set('tag.rawOpen', rawDetails.open);
    if (rawDetails.open && !rawRows) loadRaw();
  });
  body.append(rawDetails);

  function rawRow(p) {
    const q = h('span', { class: 'q' });
    setQuality(q, { quality: p.quality || 'good' });
    return h('tr', null, h('td', { class: 'nowrap' }, fmtTime(p.ts_ms)), h('td', { class: 'num' }, fmtValue(p.value, shown)), h('td', null, q));
  }

  function prependRaw(p) {
    rawRows.prepend(rawRow(p));
    while (rawRows.children.length > 200) rawRows.lastElementChild.remove();
  }

  async function loadRaw() {
    clear(rawBody).append(h('p', { class: 'muted' }, 'Loading…'));
    const windows = [['-1m', 'minute'], ['-15m', '15 minutes'], ['-1h', 'hour'], ['-24h', '24 hours'], ['-7d', '7 days']];
    let best = null;
    try {
      for (const [from, label] of windows) {
        const d = await ctx.api(`/history/raw?${qs({ path, from, to: 'now', limit: 2000 })}`);
        const s = (d.series || []).find((x) => x.topic === path) || (d.series || [])[0];
        best = { points: s ? s.points : [], truncated: !!(s && s.truncated), label };
        if (best.points.length >= 100 || best.truncated) break;
      }
    } catch (e) {
      if (isAbort(e)) return;
      clear(rawBody).append(errorNotice(e, 'the raw values'));
      return;
    }
    clear(rawBody);
    const pts = best.points.slice(-100).reverse();
    rawRows = h('tbody');
    pts.forEach((p) => rawRows.append(rawRow(p)));
    const reload = h('button', { type: 'button', class: 'btn btn-small' }, 'Reload');
    reload.addEventListener('click', () => {
      rawRows = null;
      loadRaw();
    });
    rawBody.append(
      h('div', { class: 'table-tools' }, h('p', { class: 'muted' }, pts.length
        ? `The ${pts.length} latest values of the last ${best.label}${best.truncated ? ' (of the first 2000 stored)' : ''}, newest first; new values are added live.`
        : `No values recorded in the last ${best.label}.`), reload),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Time'), h('th', { scope: 'col', class: 'num' }, 'Value'), h('th', { scope: 'col' }, 'Quality'))),
        rawRows)));
  }
  if (rawDetails.open) loadRaw();

  if (tag.live && jsonDocument(tag.live.value)) {
    // Not a time series: the historian keeps samples only.
    chartData = null;
    trendBox.replaceChildren(h('h2', { id: 'trend-h' }, 'Trend'),
      notice('info', 'No trend for this topic', 'It carries JSON documents, not time-series samples (the historian records samples only); the current document is shown above.'));
    rawDetails.hidden = true;
    return;
  }
  loadTrend();
}

// ---------------------------------------------------------------------- KPIs

const KPI_INFO = {
  oee: { label: 'OEE', sub: 'overall equipment effectiveness' },
  availability: { label: 'Availability', sub: 'APT / PBT' },
  effectiveness: { label: 'Performance', sub: 'effectiveness' },
  quality: { label: 'Quality', sub: 'GQ / PQ' },
  throughput: { label: 'Throughput' },
  scrap_ratio: { label: 'Scrap ratio' },
  technical_efficiency: { label: 'Technical efficiency' },
  mtbf: { label: 'MTBF', sub: 'mean time between failures' },
  mttr: { label: 'MTTR', sub: 'mean time to repair' },
  energy_per_good_unit: { label: 'Energy per good unit' },
};
const KPI_MAIN = ['availability', 'effectiveness', 'quality'];
const KPI_MORE = ['throughput', 'scrap_ratio', 'technical_efficiency', 'mtbf', 'mttr', 'energy_per_good_unit'];
const PERIODS = [
  ['current-shift', 'Current shift'], ['last-hour', 'Last hour'], ['last-8-hours', 'Last 8 hours'], ['last-shift', 'Last shift'],
  ['today', 'Today'], ['yesterday', 'Yesterday'], ['week', 'This week'], ['last-week', 'Last week'],
];
// Periods that end now: the API gets them as FROM..TO instants, computed at
// each request so they roll forward; the address keeps the name.
const ROLLING_PERIODS = {
  'last-hour': { ms: 3_600_000, label: 'Last hour', whose: 'the last hour’s' },
  'last-8-hours': { ms: 8 * 3_600_000, label: 'Last 8 hours', whose: 'the last 8 hours’' },
};
const LIVE_PERIODS = new Set(['current-shift', 'today', 'week', ...Object.keys(ROLLING_PERIODS)]);
// Whose time a period is, for the no-data note ("… of this shift’s 62.2 min").
const PERIOD_WHOSE = {
  'current-shift': 'this shift’s', 'last-shift': 'the last shift’s', today: 'today’s', yesterday: 'yesterday’s',
  week: 'this week’s', 'last-week': 'last week’s',
};
// Above this share of planned busy time without data, a KPI card says so.
const UNKNOWN_NOTE_SHARE = 0.1;
const kpiMemory = { scope: '' };

function kpiLabel(k) {
  return (KPI_INFO[k] && KPI_INFO[k].label) || humanKey(k);
}

function kpiText(v) {
  if (!v || v.value === null || v.value === undefined) return 'n/a';
  const x = v.value;
  switch (v.unit) {
    case 'ratio': return fmtPct(x);
    case 'units/h': return `${nf1.format(x)} units/h`;
    case 'min': return `${nf1.format(x)} min`;
    case 'kWh/unit': return `${new Intl.NumberFormat(undefined, { maximumFractionDigits: 4 }).format(x)} kWh/unit`;
    default: return `${fmtNum(x)}${v.unit ? ` ${v.unit}` : ''}`;
  }
}

function inputText(i) {
  switch (i.unit) {
    case 'ratio': return fmtPct(i.value);
    case 'min': return `${nf1.format(i.value)} min`;
    case 'h': return `${nf2.format(i.value)} h`;
    default: return `${fmtNum(i.value)}${i.unit ? ` ${i.unit}` : ''}`;
  }
}

/** The period as the API takes it: a rolling period becomes `FROM..TO` (RFC 3339) ending now. */
function apiPeriod(period) {
  const r = ROLLING_PERIODS[period];
  if (!r) return period;
  const to = new Date();
  return `${new Date(to.getTime() - r.ms).toISOString()}..${to.toISOString()}`;
}

/** The period's name for people: the selector's label, else the report's own. */
function periodLabel(period, report) {
  if (ROLLING_PERIODS[period]) return ROLLING_PERIODS[period].label;
  return (report && report.period) || period;
}

function periodWhose(period) {
  if (ROLLING_PERIODS[period]) return ROLLING_PERIODS[period].whose;
  if (PERIOD_WHOSE[period]) return PERIOD_WHOSE[period];
  if (period.startsWith('shift:')) return 'the shift’s';
  if (period.startsWith('day:')) return 'the day’s';
  return 'the period’s';
}

/**
 * A note when much of the planned busy time (PBT = POT − PDOT) has no data:
 * that time is UNKNOWN and availability counts it as lost (ISO 22400), so a
 * period that began before Gantry ran shows a low OEE. `lastHour` is the
 * address of the same view over the last hour (null: no link). Null when
 * the unknown time is at most UNKNOWN_NOTE_SHARE of PBT.
 */
function noDataNote(r, period, lastHour) {
  const e = (r && r.elements) || {};
  const pbt = (e.pot_ms || 0) - (e.pdot_ms || 0);
  const unknown = e.unknown_ms || 0;
  if (!(pbt > 0) || !(unknown > UNKNOWN_NOTE_SHARE * pbt)) return null;
  const share = Math.min(1, unknown / pbt);
  const n = Array.isArray(r.units) ? r.units.length : 0;
  const why = '(Gantry was not running or a machine sent nothing)';
  // A roll-up sums its units' times: say so rather than show "6 h of the last hour".
  const text = n > 1
    ? `${fmtPct(share)} of ${periodWhose(period)} planned busy time of its ${n} work units (${fmtDuration(unknown)} of ${fmtDuration(pbt)}, summed) has no data ${why}: availability counts it as lost.`
    : `${fmtDuration(unknown)} of ${periodWhose(period)} ${fmtDuration(pbt)} (${fmtPct(share)}) have no data ${why}: availability counts them as lost.`;
  let link = null;
  if (lastHour && period !== 'last-hour') {
    link = h('a', { class: 'btn btn-small', href: lastHour, testid: 'show-last-hour' }, 'Show the last hour');
    link.addEventListener('click', () => store.set('kpi.period', 'last-hour'));
  }
  return h('div', { class: 'notice notice-warn nodata-note', testid: 'no-data-note', dataset: { share: share.toFixed(3) } },
    h('span', { class: 'notice-icon', 'aria-hidden': 'true' }, '!'),
    h('div', { class: 'notice-body' }, h('p', null, h('strong', null, 'Mostly no data. '), text), link));
}

function levelName(path, isUnit) {
  if (isUnit) return 'Unit';
  return ['Enterprise', 'Enterprise', 'Site', 'Area', 'Line', 'Cell'][Math.min(depthOf(path), 5)] || 'Roll-up';
}

function periodSelect(id, period, onChange) {
  const sel = h('select', { id, testid: 'period-select' },
    PERIODS.map(([v, label]) => h('option', { value: v, selected: v === period }, label)));
  if (!PERIODS.some(([v]) => v === period)) sel.prepend(h('option', { value: period, selected: true }, period));
  sel.addEventListener('change', () => onChange(sel.value));
  return h('div', { class: 'field-inline' }, h('label', { for: id }, 'Period'), sel);
}

function bar(ratio) {
  const fill = h('span', { class: 'bar-fill' });
  const r = Number.isFinite(ratio) ? Math.max(0, Math.min(1, ratio)) : 0;
  fill.style.width = `${(r * 100).toFixed(1)}%`;
  return h('span', { class: 'bar', 'aria-hidden': 'true' }, fill);
}

/** Runs the async jobs with at most `n` in flight. */
async function pool(items, n, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

async function pageKpi(ctx, params) {
  const period = params.get('period') || store.get('kpi.period', 'current-shift');
  const scope = params.get('path') || '';
  const explain = params.get('explain');
  if (explain && scope) {
    await pageKpiExplain(ctx, scope, explain, period);
    return;
  }
  kpiMemory.scope = scope;
  const title = pageTitle(ctx, 'KPIs', { docTitle: scope ? `KPIs of ${scope}` : 'KPIs' });
  const updated = h('span', { class: 'muted', role: 'status' });
  const refresh = h('button', { type: 'button', class: 'btn' }, 'Refresh');
  ctx.main.append(h('div', { class: 'page-head' }, title,
    h('div', { class: 'page-tools' }, periodSelect('kpi-period', period, (p) => {
      store.set('kpi.period', p);
      location.hash = href('kpi', { path: scope, period: p });
    }), refresh, updated)));
  if (scope) {
    ctx.main.append(h('div', { class: 'scope-bar' }, breadcrumb(scope, (p) => href('kpi', { path: p, period })),
      h('a', { href: href('kpi', { period }), class: 'btn btn-quiet btn-small' }, 'All of the plant')));
  }
  const body = h('div', { class: 'kpi-body' }, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(body);
  let units;
  try {
    units = await ctx.api('/kpi/units');
  } catch (e) {
    if (isAbort(e)) return;
    clear(body).append(errorNotice(e, 'the KPI units'));
    return;
  }
  clear(body);
  const unitSet = new Set((units.units || []).map((u) => u.path));
  const all = [...new Set([...(units.paths || []), ...unitSet])];
  const allSet = new Set(all);
  if (!all.length) {
    body.append(notice('info', 'No KPIs to show', 'Either the site model defines no [[kpi.work_unit]], or your roles may not read the inputs of any work unit.'));
    return;
  }
  const nearestListed = (p) => {
    for (let q = parentPath(p); q; q = parentPath(q)) if (allSet.has(q)) return q;
    return null;
  };
  const children = new Map();
  for (const p of all) {
    const par = nearestListed(p);
    if (par) {
      if (!children.has(par)) children.set(par, []);
      children.get(par).push(p);
    }
  }
  const shown = all.filter((p) => !scope || p === scope || p.startsWith(`${scope}/`))
    .sort((a, b) => depthOf(a) - depthOf(b) || a.localeCompare(b));
  if (!shown.length) {
    body.append(notice('warn', 'Not found', `No KPI path at or below “${scope}”.`));
    return;
  }
  // Roll-ups (site, areas, lines) first, then the work units by line.
  const groups = new Map();
  const rollups = shown.filter((p) => !unitSet.has(p));
  if (rollups.length) groups.set('Site, areas and lines', rollups);
  for (const p of shown.filter((q) => unitSet.has(q))) {
    const par = nearestListed(p) || parentPath(p);
    const key = par ? `Work units of ${lastSegment(par)}` : 'Work units';
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(p);
  }
  const cards = new Map();
  for (const [key, paths] of groups) {
    const grid = h('div', { class: 'kpi-grid' });
    const secId = uid('kpisec');
    body.append(h('section', { class: 'kpi-section', 'aria-labelledby': secId }, h('h2', { id: secId }, key), grid));
    for (const p of paths) {
      const card = kpiCard(p, unitSet.has(p), children.get(p) || [], period, href('kpi', { path: scope, period: 'last-hour' }));
      cards.set(p, card);
      grid.append(card.el);
    }
  }

  let loading = false;
  async function loadAll() {
    if (loading) return;
    loading = true;
    refresh.disabled = true;
    try {
      // One range for every card of this refresh.
      const asked = apiPeriod(period);
      await pool(shown, 4, async (p) => {
        if (ctx.disposed) return;
        try {
          const r = await ctx.api(`/kpi?${qs({ path: p, period: asked })}`);
          cards.get(p).fill(r);
        } catch (e) {
          if (!isAbort(e)) cards.get(p).fail(e);
        }
      });
      updated.textContent = `Updated ${fmtTime(Date.now())}`;
    } finally {
      loading = false;
      refresh.disabled = false;
    }
  }
  refresh.addEventListener('click', loadAll);
  if (LIVE_PERIODS.has(period)) ctx.interval(loadAll, 30_000);
  await loadAll();
}

function kpiCard(path, isUnit, kids, period, lastHour) {
  const level = levelName(path, isUnit);
  const content = h('div', { class: 'kpi-content' }, h('p', { class: 'muted' }, 'Loading…'));
  const el = h('article', { class: `panel kpi-card${isUnit ? ' is-unit' : ' is-rollup'}`, testid: 'kpi-card', dataset: { path } },
    h('header', { class: 'kpi-card-head' },
      h('h3', null, isUnit ? lastSegment(path) : h('a', { href: href('kpi', { path, period }) }, lastSegment(path))),
      h('span', { class: 'level-badge' }, level),
      h('p', { class: 'path-line' }, h('code', { class: 'path' }, path))),
    content);
  const tile = (r, k, main) => {
    const v = (r.kpis || []).find((x) => x.kpi === k);
    const info = KPI_INFO[k] || {};
    const a = h('a', {
      class: main ? 'kpi-tile kpi-tile-main' : 'kpi-tile', href: href('kpi', { path, period, explain: k }),
      testid: `kpi-${k}`, dataset: { kpi: k }, 'aria-label': `${info.label || k} ${kpiText(v)}: explain`,
    },
    h('span', { class: 'kpi-label' }, info.label || k, info.sub && !main ? h('span', { class: 'kpi-sub' }, info.sub) : null),
    h('span', { class: 'kpi-num' }, kpiText(v)),
    v && v.unit === 'ratio' ? bar(v.value) : null,
    v && (v.value === null || v.value === undefined) && v.why ? h('span', { class: 'kpi-why' }, v.why) : null);
    return a;
  };
  return {
    el,
    fill(r) {
      clear(content);
      appendAll(content, [tile(r, 'oee', true), noDataNote(r, period, lastHour), h('div', { class: 'kpi-trio' }, KPI_MAIN.map((k) => tile(r, k, false)))]);
      const more = h('dl', { class: 'kpi-more' });
      for (const k of KPI_MORE) {
        const v = (r.kpis || []).find((x) => x.kpi === k);
        if (!v) continue;
        more.append(h('div', null, h('dt', null, kpiLabel(k)), h('dd', null,
          h('a', { href: href('kpi', { path, period, explain: k }), title: v.why || v.formula || '' }, kpiText(v)))));
      }
      content.append(more);
      const foot = h('footer', { class: 'kpi-foot' }, h('span', { class: 'muted' }, `${periodLabel(period, r)} · ${fmtTime(r.from_ms, false)} – ${fmtTime(r.to_ms, false).slice(11)}`));
      if (kids.length) {
        foot.append(h('nav', { class: 'kpi-kids', 'aria-label': `Below ${lastSegment(path)}` }, h('span', { class: 'muted' }, `${isUnit ? 'Below' : 'Units'}:`),
          kids.map((kp) => h('a', { href: href('kpi', { path: kp, period }) }, lastSegment(kp)))));
      }
      content.append(foot);
    },
    fail(e) {
      clear(content).append(errorNotice(e, `the KPIs of ${path}`));
    },
  };
}

async function pageKpiExplain(ctx, path, kpi, period) {
  const title = pageTitle(ctx, `${kpiLabel(kpi)} of ${lastSegment(path)}`, { docTitle: `${kpiLabel(kpi)} of ${path}` });
  const back = h('a', { class: 'btn btn-quiet', href: href('kpi', { path: kpiMemory.scope || undefined, period }) }, '← Back to the KPIs');
  ctx.main.append(h('div', { class: 'page-head' }, h('div', null, back, title, h('p', { class: 'path-line' }, h('code', { class: 'path' }, path))),
    h('div', { class: 'page-tools' }, periodSelect('explain-period', period, (p) => {
      store.set('kpi.period', p);
      location.hash = href('kpi', { path, period: p, explain: kpi });
    }))));
  ctx.main.append(h('nav', { class: 'tabs', 'aria-label': 'KPI to explain' }, h('ul', null, Object.keys(KPI_INFO).map((k) => h('li', null,
    h('a', { href: href('kpi', { path, period, explain: k }), 'aria-current': k === kpi ? 'page' : null }, kpiLabel(k)))))));
  const box = h('div', { class: 'explain', testid: 'kpi-explain' }, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(box);
  let d;
  try {
    d = await ctx.api(`/kpi/explain?${qs({ path, kpi, period: apiPeriod(period) })}`);
  } catch (e) {
    if (isAbort(e)) return;
    clear(box).append(errorNotice(e, `the explanation of ${kpiLabel(kpi)}`));
    return;
  }
  clear(box);
  const v = d.kpi || {};
  const r = d.report || {};
  const e = r.elements || {};
  const head = h('section', { class: 'panel explain-head', 'aria-label': 'Value and formula' },
    h('div', { class: 'explain-value' }, h('span', { class: 'kpi-label' }, kpiLabel(kpi)), h('span', { class: 'kpi-num' }, kpiText(v)),
      v.unit === 'ratio' ? bar(v.value) : null),
    h('div', { class: 'explain-formula' },
      h('p', null, h('span', { class: 'muted' }, 'Formula '), h('code', { class: 'formula' }, `${kpiLabel(kpi)} = ${v.formula || '?'}`)),
      v.why ? h('p', { class: 'kpi-why' }, v.why) : null,
      h('p', { class: 'muted' }, `${periodLabel(period, r)} · ${fmtTime(r.from_ms)} to ${fmtTime(r.to_ms)}`)));
  appendAll(box, [head, noDataNote(r, period, href('kpi', { path, period: 'last-hour', explain: kpi }))]);

  const inputs = h('table', { class: 'data' }, h('caption', null, 'Inputs'),
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Element'), h('th', { scope: 'col', class: 'num' }, 'Value'))),
    h('tbody', null, (v.inputs || []).map((i) => h('tr', null, h('th', { scope: 'row' }, i.name), h('td', { class: 'num' }, inputText(i))))));
  const pbt = (e.pot_ms || 0) - (e.pdot_ms || 0);
  const tm = [['POT', 'planned operation time', e.pot_ms], ['PDOT', 'planned downtime', e.pdot_ms], ['PBT', 'planned busy time', pbt],
    ['APT', 'producing', e.apt_ms], ['AUST', 'setup, changeover', e.aust_ms], ['ADET', 'delays: starved, blocked', e.adet_ms],
    ['ADOT', 'down: breakdowns, idle', e.adot_ms], ['UNKNOWN', 'no usable data', e.unknown_ms]];
  const time = h('table', { class: 'data' }, h('caption', null, 'Time model'),
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Element'), h('th', { scope: 'col', class: 'num' }, 'Minutes'), h('th', { scope: 'col', class: 'num' }, 'of PBT'))),
    h('tbody', null, tm.map(([k, what, ms]) => h('tr', null, h('th', { scope: 'row' }, k, h('span', { class: 'muted small' }, ` ${what}`)),
      h('td', { class: 'num' }, Number.isFinite(ms) ? nf1.format(ms / 60_000) : '—'),
      h('td', { class: 'num' }, ['POT', 'PDOT'].includes(k) || !pbt || !Number.isFinite(ms) ? '' : fmtPct(ms / pbt))))));
  const qty = h('table', { class: 'data' }, h('caption', null, 'Quantities'),
    h('tbody', null, [['PQ', 'produced', e.produced], ['GQ', 'good', e.good], ['SQ', 'scrap', e.scrap], ['FE', 'failure events', e.failures],
      ['Energy', 'kWh', e.energy_kwh]].filter(([, , x]) => x !== undefined && x !== null).map(([k, what, x]) =>
      h('tr', null, h('th', { scope: 'row' }, k, h('span', { class: 'muted small' }, ` ${what}`)), h('td', { class: 'num' }, fmtNum(x))))));
  box.append(h('div', { class: 'explain-grid' }, h('div', { class: 'panel' }, inputs), h('div', { class: 'panel' }, time), h('div', { class: 'panel' }, qty)));

  const us = r.units || [];
  if (us.length > 1 || (us.length === 1 && us[0].path !== r.path)) {
    const k = (u, name) => {
      const x = (u.kpis || []).find((y) => y.kpi === name);
      return kpiText(x);
    };
    box.append(h('section', { class: 'panel' }, h('h2', null, `Rolled up from ${us.length} work units`),
      h('p', { class: 'muted' }, 'A roll-up adds up its units’ time and quantity elements and applies the formulas to the sums; it never averages percentages.'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('thead', null, h('tr', null, ['Unit', 'OEE', 'Availability', 'Performance', 'Quality', 'PBT'].map((c, i) => h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
        h('tbody', null, us.map((u) => h('tr', null,
          h('th', { scope: 'row' }, h('a', { href: href('kpi', { path: u.path, period, explain: kpi }) }, u.path)),
          h('td', { class: 'num' }, k(u, 'oee')), h('td', { class: 'num' }, k(u, 'availability')),
          h('td', { class: 'num' }, k(u, 'effectiveness')), h('td', { class: 'num' }, k(u, 'quality')),
          h('td', { class: 'num' }, u.elements ? `${nf1.format(((u.elements.pot_ms || 0) - (u.elements.pdot_ms || 0)) / 60_000)} min` : '—'))))))));
  }

  const byReason = new Map();
  for (const u of us) {
    for (const dt of u.downtime || []) {
      const key = `${dt.reason}\u0000${dt.bucket}`;
      const cur = byReason.get(key) || { reason: dt.reason, bucket: dt.bucket, ms: 0, n: 0 };
      cur.ms += dt.ms || 0;
      cur.n += dt.occurrences || 0;
      byReason.set(key, cur);
    }
  }
  const rows = [...byReason.values()].sort((a, b) => b.ms - a.ms);
  const totalDown = rows.reduce((a, b) => a + b.ms, 0);
  box.append(h('section', { class: 'panel' }, h('h2', null, 'Downtime by reason'),
    rows.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data', testid: 'downtime-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Reason'), h('th', { scope: 'col' }, 'Bucket'),
        h('th', { scope: 'col', class: 'num' }, 'Minutes'), h('th', { scope: 'col', class: 'num' }, 'Share'), h('th', { scope: 'col', class: 'num' }, 'Times'))),
      h('tbody', null, rows.map((x) => h('tr', null, h('th', { scope: 'row' }, x.reason || '(no reason)'), h('td', null, x.bucket),
        h('td', { class: 'num' }, nf1.format(x.ms / 60_000)), h('td', { class: 'num' }, h('span', { class: 'share' }, bar(totalDown ? x.ms / totalDown : 0), fmtPct(totalDown ? x.ms / totalDown : 0))),
        h('td', { class: 'num' }, nf0.format(x.n))))))) : h('p', { class: 'muted' }, 'No downtime in this period.')));

  box.append(h('section', { class: 'panel' }, h('h2', null, 'Explanation'),
    h('p', { class: 'muted' }, 'As printed by gantry kpi explain.'),
    h('pre', { class: 'explain-text', testid: 'explain-text', tabindex: '0' }, d.text || '')));
}

// ---------------------------------------------------------- generic renderers

function fmtAny(key, v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number') {
    const k = String(key).toLowerCase();
    if (/(^|_)(port|id|seq|generation|pid|version)$/.test(k)) return String(v);
    if (/(^|_)(secs|seconds)$/.test(k)) return fmtDuration(v * 1000);
    if (/_ms$|^ts$|_at$/.test(k) && v > 1e12) return `${fmtTime(v)} (${fmtAge(Date.now() - v)})`;
    if (/_ms$/.test(k)) return `${fmtNum(v)} ms`;
    if (/bytes$/.test(k)) return fmtBytes(v);
    return fmtNum(v);
  }
  if (typeof v === 'string') return v === '' ? '(empty)' : v;
  if (Array.isArray(v)) {
    if (!v.length) return '(none)';
    if (v.every((x) => x === null || typeof x !== 'object')) return truncate(v.map((x) => String(x)).join(', '), 400);
    return truncate(JSON.stringify(v), 400);
  }
  return truncate(JSON.stringify(v), 400);
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return String(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${i ? nf1.format(x) : nf0.format(x)} ${units[i]}`;
}

/** Key/value list of any JSON object; nested objects become nested lists. */
function kvBlock(obj, depth = 0) {
  const el = h('dl', { class: depth ? 'kv kv-nested' : 'kv' });
  for (const [k, v] of Object.entries(obj || {})) {
    let dd;
    if (v && typeof v === 'object' && !Array.isArray(v) && depth < 3) dd = Object.keys(v).length ? kvBlock(v, depth + 1) : '(none)';
    else dd = fmtAny(k, v);
    el.append(h('div', { class: 'kv-row' }, h('dt', null, humanKey(k)), h('dd', null, dd)));
  }
  if (!el.children.length) el.append(h('div', { class: 'kv-row' }, h('dd', { class: 'muted' }, '(empty)')));
  return el;
}

/** Counters: scalars as tiles, nested maps (by rule, by path…) as small tables. */
function statsSummary(obj) {
  const frag = h('div', { class: 'stats-summary' });
  const entries = Object.entries(obj || {});
  const scalars = entries.filter(([, v]) => v === null || typeof v !== 'object' || Array.isArray(v));
  const nested = entries.filter(([, v]) => v && typeof v === 'object' && !Array.isArray(v));
  if (scalars.length) {
    frag.append(h('div', { class: 'stat-grid stat-grid-wide' }, scalars.map(([k, v]) =>
      h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, humanKey(k)), h('span', { class: 'stat-value' }, fmtAny(k, v))))));
  }
  if (nested.length) {
    frag.append(h('div', { class: 'mini-tables' }, nested.map(([k, v]) => {
      const rows = Object.entries(v).sort((a, b) => (typeof b[1] === 'number' && typeof a[1] === 'number' ? b[1] - a[1] : 0));
      return h('table', { class: 'data mini' }, h('caption', null, humanKey(k)),
        h('tbody', null, rows.length ? rows.slice(0, 50).map(([rk, rv]) => h('tr', null, h('th', { scope: 'row', class: 'topic' }, rk),
          h('td', { class: 'num' }, rv && typeof rv === 'object' ? truncate(JSON.stringify(rv), 200) : fmtAny(rk, rv))))
          : h('tr', null, h('td', { class: 'muted' }, '(none)'))));
    })));
  }
  if (!entries.length) frag.append(h('p', { class: 'muted' }, '(empty)'));
  return frag;
}

function statusClass(text) {
  const t = String(text).toLowerCase();
  if (/^(ok|up|connected|running|online|healthy|good|ready|active|true|yes)$/.test(t)) return 'ok';
  if (/(down|disconnect|error|fail|offline|bad|fault|broken|stopped|false|dead)/.test(t)) return 'bad';
  return 'warn';
}

function statusBadge(text, cls = statusClass(text)) {
  return h('span', { class: `status status-${cls}` }, h('span', { class: 'status-icon', 'aria-hidden': 'true' }, cls === 'ok' ? '✓' : cls === 'bad' ? '✕' : '!'), String(text));
}

// --------------------------------------------------------------- dead letters

async function pageDeadLetters(ctx, params) {
  const title = pageTitle(ctx, 'Dead letters');
  const live = liveBadge();
  const filterIn = h('input', { id: 'dlq-filter', type: 'search', value: params.get('path') || '', placeholder: 'e.g. acme/dallas/packaging/line-1', autocomplete: 'off', spellcheck: 'false' });
  const filterForm = h('form', { class: 'filter-form', role: 'search' },
    h('div', { class: 'field-inline' }, h('label', { for: 'dlq-filter' }, 'Topic starts with'), filterIn), h('button', { type: 'submit', class: 'btn' }, 'Filter'));
  const updated = h('span', { class: 'muted', role: 'status' });
  ctx.main.append(h('div', { class: 'page-head' }, title, h('div', { class: 'page-tools' }, live, updated)),
    h('p', { class: 'lead muted' }, 'Messages refused because they broke a data contract, republished under <enterprise>/_dlq/<original topic>. Newest first.'),
    filterForm);
  const counters = h('section', { class: 'panel', 'aria-labelledby': 'dlq-counters-h', testid: 'dlq-counters' }, h('h2', { id: 'dlq-counters-h' }, 'Contract statistics'));
  const tableBox = h('section', { class: 'panel', 'aria-labelledby': 'dlq-list-h' }, h('h2', { id: 'dlq-list-h' }, 'Refused messages'));
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  tableBox.append(list);
  ctx.main.append(counters, tableBox);
  const seen = new Set();
  let first = true;
  let filter = filterIn.value.trim();
  filterForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    filter = filterIn.value.trim();
    replaceHash(href('dead-letters', { path: filter }));
    first = true;
    seen.clear();
    load();
  });

  async function load() {
    let d;
    try {
      d = await ctx.api(`/dead-letters?${qs({ limit: 200, path: filter || null })}`);
    } catch (e) {
      if (isAbort(e)) return;
      clear(list).append(errorNotice(e, 'the dead letters'));
      return;
    }
    updated.textContent = `Updated ${fmtTime(Date.now())}`;
    const entries = d.entries || [];
    clear(counters).append(h('h2', { id: 'dlq-counters-h' }, 'Contract statistics'),
      d.counters && Object.keys(d.counters).length ? statsSummary(d.counters) : h('p', { class: 'muted' }, 'Data contracts are not enabled.'));
    clear(list);
    if (!entries.length) {
      list.append(notice('info', 'No dead letters', filter ? `Nothing refused under “${filter}”.` : 'No message has broken a data contract.'));
      return;
    }
    const tbody = h('tbody');
    for (const x of entries) {
      const key = `${x.dlq_topic}|${x.received_ms}|${x.client_id}|${x.reason}`;
      const isNew = !first && !seen.has(key);
      seen.add(key);
      const payload = x.payload !== undefined && x.payload !== null ? String(x.payload) : (x.payload_base64 ? `base64: ${x.payload_base64}` : '');
      const payloadCell = payload.length > 120
        ? h('details', null, h('summary', null, h('code', null, truncate(payload, 60))), h('pre', { class: 'payload' }, truncate(payload, 20000)))
        : h('code', { class: 'payload' }, payload || '(empty)');
      tbody.append(h('tr', { testid: 'dlq-row', dataset: { topic: x.topic || '' }, class: isNew ? 'row-new' : null },
        h('td', { class: 'nowrap' }, fmtTime(x.received_ms)),
        h('td', { class: 'topic' }, x.topic ? h('a', { href: href('tag', { path: x.topic }) }, x.topic) : '—'),
        h('td', null, x.reason || '—'),
        h('td', null, x.rule ? h('span', { class: 'chip' }, x.rule) : '—'),
        h('td', { class: 'nowrap' }, x.client_id || '—'),
        h('td', { class: 'payload-cell' }, payloadCell)));
    }
    first = false;
    const total = Number.isFinite(d.total) ? d.total : entries.length;
    list.append(h('p', { class: 'muted' }, `${entries.length} ${entries.length === 1 ? 'topic' : 'topics'} with a refused message${total > entries.length ? ` (the ${entries.length} newest of ${total})` : ''}; the last refused message of each topic is kept.`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', testid: 'dlq-table' },
        h('thead', null, h('tr', null, ['Time', 'Topic', 'Reason', 'Rule', 'Client', 'Payload'].map((c) => h('th', { scope: 'col' }, c)))), tbody)));
  }

  await load();
  if (ctx.disposed) return;
  const ents = await enterprises(ctx);
  let liveState = 'idle';
  const reload = throttle(load, 1000);
  ctx.onDispose(() => reload.cancel());
  if (ents.length) {
    openLive(ctx, ents.map((e) => `${e}/_dlq`), {
      onChanges: () => reload(),
      onHello: () => reload(),
      onStatus: (s) => {
        liveState = s;
        live.set(s);
      },
    });
  }
  // Polling when the live feed is not up.
  ctx.interval(() => {
    if (liveState !== 'live') load();
  }, 5000);
}

// ----------------------------------------------------------------- connectors

function connectorCard(c) {
  const raw = c.health;
  const hl = raw && typeof raw === 'object' && !Array.isArray(raw) ? raw : { value: raw };
  const name = hl.device || hl.name || lastSegment(c.topic || '?');
  const st = hl.status ?? hl.state ?? (typeof hl.connected === 'boolean' ? (hl.connected ? 'connected' : 'disconnected') : 'unknown');
  const card = h('article', { class: 'panel connector-card', testid: 'connector-card', dataset: { topic: c.topic || '' } },
    h('header', { class: 'card-head' }, h('h3', null, name), statusBadge(st)),
    h('p', { class: 'path-line' }, h('code', { class: 'path' }, c.topic || '')));
  const shown = new Set(['device', 'name', 'status', 'state', 'connected']);
  if (hl.last_error) card.append(notice('error', 'Last error', String(hl.last_error)));
  shown.add('last_error');
  const stats = [];
  const stat = (key, label, text) => {
    if (!(key in hl)) return;
    shown.add(key);
    stats.push(h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, text)));
  };
  stat('last_success_ms', 'Last good poll', hl.last_success_ms ? fmtAge(Date.now() - hl.last_success_ms) : 'never');
  stat('poll_duration_ms', 'Poll time', hl.poll_duration_ms === null ? '—' : `${fmtNum(hl.poll_duration_ms)} ms`);
  stat('points', 'Points', fmtNum(hl.points));
  stat('points_bad', 'Bad points', fmtNum(hl.points_bad));
  stat('reconnects', 'Reconnects', fmtNum(hl.reconnects));
  stat('polls', 'Polls', fmtNum(hl.polls));
  if (hl.errors && typeof hl.errors === 'object') {
    const total = Object.values(hl.errors).reduce((a, b) => a + (Number(b) || 0), 0);
    stat('errors', 'Errors', fmtNum(total));
  }
  if (stats.length) card.append(h('div', { class: 'stat-grid' }, stats));
  if (hl.errors && typeof hl.errors === 'object') {
    card.append(h('p', { class: 'inline-kv' }, h('span', { class: 'muted' }, 'Errors by kind: '),
      Object.entries(hl.errors).map(([ek, ev], i) => [i ? ' · ' : '', `${humanKey(ek).toLowerCase()} ${fmtAny(ek, ev)}`])));
  }
  if (hl.identity && typeof hl.identity === 'object') {
    shown.add('identity');
    card.append(h('h4', null, 'Device identity'), kvBlock(hl.identity, 1));
  }
  const rest = Object.fromEntries(Object.entries(hl).filter(([key]) => !shown.has(key)));
  if (Object.keys(rest).length) card.append(h('h4', null, 'Details'), kvBlock(rest, 1));
  return card;
}

async function pageConnectors(ctx) {
  const title = pageTitle(ctx, 'Connectors & broker');
  const live = liveBadge();
  const updated = h('span', { class: 'muted', role: 'status' });
  ctx.main.append(h('div', { class: 'page-head' }, title, h('div', { class: 'page-tools' }, live, updated)));
  const connBox = h('div', { class: 'connector-grid' }, h('p', { class: 'muted' }, 'Loading…'));
  const brokerBox = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(
    h('section', { class: 'page-section', 'aria-labelledby': 'conn-h' }, h('h2', { id: 'conn-h' }, 'Connectors'), connBox),
    h('section', { class: 'page-section', 'aria-labelledby': 'broker-h' }, h('h2', { id: 'broker-h' }, 'Broker, historian and contracts'), brokerBox));

  async function loadConnectors() {
    try {
      const d = await ctx.api('/connectors');
      clear(connBox);
      const list = (d.connectors || []).slice().sort((a, b) => String(a.topic).localeCompare(String(b.topic)));
      if (!list.length) connBox.append(notice('info', 'No connectors', 'No connector has published its health.'));
      for (const c of list) connBox.append(connectorCard(c));
      updated.textContent = `Updated ${fmtTime(Date.now())}`;
    } catch (e) {
      if (!isAbort(e)) clear(connBox).append(errorNotice(e, 'the connectors'));
    }
  }

  async function loadBroker() {
    try {
      const d = await ctx.api('/broker');
      clear(brokerBox);
      const stats = d.stats || {};
      const scalars = Object.entries(stats).filter(([, v]) => v === null || typeof v !== 'object');
      const nested = Object.entries(stats).filter(([, v]) => v && typeof v === 'object');
      const grid = h('div', { class: 'stat-grid stat-grid-wide' }, scalars.map(([k, v]) =>
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, humanKey(k)), h('span', { class: 'stat-value' }, fmtAny(k, v)))));
      const bp = h('article', { class: 'panel', testid: 'broker-stats' }, h('h3', null, 'Broker'), scalars.length ? grid : null,
        nested.map(([k, v]) => h('details', { class: 'kv-details' }, h('summary', null, humanKey(k)), kvBlock(Array.isArray(v) ? { ...v } : v, 1))));
      const hist = h('article', { class: 'panel', testid: 'historian-status' }, h('h3', null, 'Historian'),
        d.historian ? kvBlock(d.historian) : h('p', { class: 'muted' }, 'The historian is not enabled.'));
      const con = h('article', { class: 'panel' }, h('h3', null, 'Data contracts'),
        d.contracts ? statsSummary(d.contracts) : h('p', { class: 'muted' }, 'Data contracts are not enabled.'));
      const others = Object.entries(d).filter(([k, v]) => !['stats', 'historian', 'contracts'].includes(k) && v && typeof v === 'object')
        .map(([k, v]) => h('article', { class: 'panel' }, h('h3', null, humanKey(k)), kvBlock(v)));
      brokerBox.append(h('div', { class: 'card-grid' }, bp, hist, others), con);
    } catch (e) {
      if (!isAbort(e)) clear(brokerBox).append(errorNotice(e, 'the broker statistics'));
    }
  }

  await Promise.all([loadConnectors(), loadBroker()]);
  if (ctx.disposed) return;
  if (can('sys')) await renderClients(ctx);
  const ents = await enterprises(ctx);
  let liveState = 'idle';
  const reload = throttle(loadConnectors, 2000);
  ctx.onDispose(() => reload.cancel());
  if (ents.length) {
    openLive(ctx, ents.map((e) => `${e}/_sys/connectors`), {
      onChanges: () => reload(),
      onHello: () => reload(),
      onStatus: (s) => {
        liveState = s;
        live.set(s);
      },
    });
  }
  ctx.interval(() => {
    if (liveState !== 'live') loadConnectors();
    loadBroker();
  }, 10_000);
}

async function renderClients(ctx) {
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const filterIn = h('input', { id: 'client-filter', type: 'search', placeholder: 'client id, identity or peer', autocomplete: 'off' });
  const refresh = h('button', { type: 'button', class: 'btn' }, 'Refresh');
  ctx.main.append(h('section', { class: 'page-section', 'aria-labelledby': 'clients-h' }, h('h2', { id: 'clients-h' }, 'Clients'),
    h('div', { class: 'filter-form' }, h('div', { class: 'field-inline' }, h('label', { for: 'client-filter' }, 'Filter'), filterIn), refresh), box));
  let clients = [];
  let limit = 300;
  const paint = () => {
    clear(box);
    const f = filterIn.value.trim().toLowerCase();
    const rows = clients.filter((c) => !f || [c.client_id, c.identity, c.peer].some((x) => x && String(x).toLowerCase().includes(f)));
    if (!clients.length) {
      box.append(h('p', { class: 'muted' }, 'No MQTT client is connected.'));
      return;
    }
    const tbody = h('tbody');
    for (const c of rows.slice(0, limit)) {
      const subs = Array.isArray(c.subscriptions) ? c.subscriptions : [];
      const subText = subs.map((s) => (typeof s === 'string' ? s : s.filter || s.topic || JSON.stringify(s)));
      tbody.append(h('tr', { testid: 'client-row' },
        h('th', { scope: 'row' }, c.client_id || '—'),
        h('td', null, statusBadge(c.connected ? 'connected' : 'offline', c.connected ? 'ok' : 'warn')),
        h('td', null, c.identity || '—'), h('td', { class: 'nowrap' }, c.peer || '—'), h('td', null, c.transport || '—'),
        h('td', null, subs.length ? h('details', null, h('summary', null, `${subs.length}`), h('ul', { class: 'plain' }, subText.map((s) => h('li', null, h('code', null, s))))) : '0'),
        h('td', { class: 'num' }, fmtNum(c.queued ?? 0)), h('td', { class: 'num' }, fmtNum(c.inflight ?? 0))));
    }
    box.append(h('p', { class: 'muted' }, `${rows.length} of ${clients.length} clients${rows.length > limit ? `, showing ${limit}` : ''}.`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('thead', null, h('tr', null, ['Client id', 'State', 'Identity', 'Peer', 'Transport', 'Subscriptions', 'Queued', 'In flight'].map((x, i) => h('th', { scope: 'col', class: i >= 6 ? 'num' : null }, x)))), tbody)));
    if (rows.length > limit) {
      const more = h('button', { type: 'button', class: 'btn' }, `Show all ${rows.length}`);
      more.addEventListener('click', () => {
        limit = Infinity;
        paint();
      });
      box.append(more);
    }
  };
  const load = async () => {
    try {
      const d = await ctx.api('/clients');
      clients = (d.clients || []).slice().sort((a, b) => String(a.client_id).localeCompare(String(b.client_id)));
      paint();
    } catch (e) {
      if (!isAbort(e)) clear(box).append(errorNotice(e, 'the clients'));
    }
  };
  filterIn.addEventListener('input', debounce(paint, 200));
  refresh.addEventListener('click', load);
  await load();
}

// ---------------------------------------------------------------------- audit

async function pageAudit(ctx) {
  const title = pageTitle(ctx, 'Audit log');
  const chainBox = h('div', { class: 'chain' });
  const limitSel = h('select', { id: 'audit-limit' }, [200, 1000, 5000].map((n) => h('option', { value: n }, String(n))));
  const catSel = h('select', { id: 'audit-cat' }, h('option', { value: '' }, 'All'));
  const outSel = h('select', { id: 'audit-outcome' }, h('option', { value: '' }, 'All'), h('option', { value: 'fail' }, 'Failed or denied'), h('option', { value: 'ok' }, 'Succeeded'));
  const textIn = h('input', { id: 'audit-text', type: 'search', placeholder: 'actor, target, type…', autocomplete: 'off' });
  const refresh = h('button', { type: 'button', class: 'btn' }, 'Refresh');
  ctx.main.append(h('div', { class: 'page-head' }, title, h('div', { class: 'page-tools' }, chainBox)),
    h('div', { class: 'filter-form' },
      h('div', { class: 'field-inline' }, h('label', { for: 'audit-cat' }, 'Category'), catSel),
      h('div', { class: 'field-inline' }, h('label', { for: 'audit-outcome' }, 'Outcome'), outSel),
      h('div', { class: 'field-inline' }, h('label', { for: 'audit-text' }, 'Contains'), textIn),
      h('div', { class: 'field-inline' }, h('label', { for: 'audit-limit' }, 'Records'), limitSel), refresh));
  const box = h('div', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(box);
  let records = [];
  const paint = () => {
    clear(box);
    const cat = catSel.value;
    const out = outSel.value;
    const f = textIn.value.trim().toLowerCase();
    const rows = records.filter((r) => {
      const ok = r.outcome ? r.outcome.success : r.success;
      if (cat && r.category !== cat) return false;
      if (out === 'fail' && ok !== false) return false;
      if (out === 'ok' && ok !== true) return false;
      if (f && !JSON.stringify(r).toLowerCase().includes(f)) return false;
      return true;
    });
    const tbody = h('tbody');
    for (const r of rows) {
      const ok = r.outcome ? r.outcome.success : r.success;
      const reason = r.outcome ? r.outcome.reason : r.reason;
      const actor = r.actor && typeof r.actor === 'object' ? r.actor : { id: r.actor };
      const src = r.source && typeof r.source === 'object' ? [r.source.transport, r.source.ip, r.source.client_id].filter(Boolean).join(' · ') : '';
      tbody.append(h('tr', { testid: 'audit-row', class: ok === false ? 'row-fail' : null },
        h('td', { class: 'nowrap' }, fmtTime(r.ts_ms ?? Date.parse(r.ts_utc))),
        h('td', null, r.category || '—'), h('td', null, r.type || '—'),
        h('td', null, actor.id || '—', actor.kind ? h('span', { class: 'muted small block' }, [actor.kind, src].filter(Boolean).join(' · ')) : null),
        h('td', null, r.action || '—'), h('td', { class: 'topic' }, r.target || '—'),
        h('td', null, ok === undefined ? '—' : statusBadge(ok ? 'yes' : 'no', ok ? 'ok' : 'bad')),
        h('td', null, reason || '')));
    }
    box.append(h('p', { class: 'muted' }, `${rows.length} of ${records.length} records, newest first.`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', testid: 'audit-table' },
        h('thead', null, h('tr', null, ['Time', 'Category', 'Type', 'Actor', 'Action', 'Target', 'OK', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))), tbody)));
  };
  const load = async () => {
    try {
      const d = await ctx.api(`/audit?${qs({ limit: limitSel.value })}`);
      records = d.records || [];
      const cats = [...new Set(records.map((r) => r.category).filter(Boolean))].sort();
      const keep = catSel.value;
      clear(catSel).append(h('option', { value: '' }, 'All'), cats.map((c) => h('option', { value: c, selected: c === keep }, c)));
      clear(chainBox);
      const ch = d.chain;
      if (ch) {
        const badge = statusBadge(ch.ok ? `Chain verified · ${fmtNum(ch.records ?? records.length)} records` : 'Chain broken', ch.ok ? 'ok' : 'bad');
        badge.dataset.testid = 'chain-status';
        chainBox.append(badge);
        if (!ch.ok && Array.isArray(ch.problems) && ch.problems.length) {
          box.before(notice('error', 'The audit chain does not verify', null, h('ul', null, ch.problems.slice(0, 20).map((p) => h('li', null, typeof p === 'string' ? p : JSON.stringify(p))))));
        }
      }
      paint();
    } catch (e) {
      if (!isAbort(e)) clear(box).append(errorNotice(e, 'the audit log'));
    }
  };
  for (const el of [catSel, outSel]) el.addEventListener('change', paint);
  textIn.addEventListener('input', debounce(paint, 200));
  limitSel.addEventListener('change', load);
  refresh.addEventListener('click', load);
  await load();
}

// --------------------------------------------------------------------- access

/**
 * Asks before an action, in a modal dialog that names its effect. Resolves
 * true when confirmed; Cancel, Escape or leaving the page resolve false.
 */
function confirmDialog(ctx, { title, message, confirm, danger = false }) {
  return new Promise((resolve) => {
    const titleId = uid('dlg-title');
    const msgId = uid('dlg-msg');
    const ok = h('button', { type: 'button', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}`, testid: 'confirm-ok' }, confirm);
    const cancel = h('button', { type: 'button', class: 'btn', testid: 'confirm-cancel' }, 'Cancel');
    const dlg = h('dialog', { class: 'confirm-dialog', testid: 'confirm-dialog', 'aria-labelledby': titleId, 'aria-describedby': msgId },
      h('h2', { id: titleId }, title), h('p', { id: msgId }, message), h('div', { class: 'dialog-actions' }, cancel, ok));
    const opener = document.activeElement;
    let confirmed = false;
    ok.addEventListener('click', () => {
      confirmed = true;
      dlg.close();
    });
    cancel.addEventListener('click', () => dlg.close());
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (!confirmed && opener && opener.isConnected) opener.focus();
      resolve(confirmed);
    });
    ctx.onDispose(() => {
      if (dlg.open) dlg.close();
    });
    document.body.append(dlg);
    dlg.showModal();
    // The harmless choice has the focus: Enter does not act by accident.
    cancel.focus();
  });
}

async function pageAccess(ctx) {
  ctx.main.append(h('div', { class: 'page-head' }, pageTitle(ctx, 'Users and roles')));
  const usersBox = h('section', { class: 'panel', 'aria-labelledby': 'users-h' }, h('h2', { id: 'users-h' }, 'Users'));
  const usersStatus = h('div', { class: 'access-status' });
  const usersBody = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  usersBox.append(usersStatus, usersBody);
  const rolesBox = h('section', { class: 'panel', 'aria-labelledby': 'roles-h' }, h('h2', { id: 'roles-h' }, 'Roles'), h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(usersBox, rolesBox);
  const showUsers = can('users') || !can('roles');
  const showRoles = can('roles') || !can('users');
  const manage = can('users');
  // Every role's name, for "Add role" (null: the roles could not be read).
  let roleNames = null;

  const rowOf = (name) => [...usersBody.querySelectorAll('[data-testid="user-row"]')].find((r) => r.dataset.user === name);

  /** Runs one change of `user`, then re-reads the table and says what happened. */
  async function change(user, what, request, done, focus) {
    clear(usersStatus);
    const row = rowOf(user);
    if (row) for (const b of row.querySelectorAll('button, select')) b.disabled = true;
    let ok = false;
    try {
      const res = await ctx.api(`/users/${encodeURIComponent(user)}/${request.path}`, { method: 'POST', body: request.body });
      ok = true;
      toast(done(res || {}));
    } catch (e) {
      if (isAbort(e) || ctx.disposed) return;
      usersStatus.append(notice('error', `Could not ${what}`, e instanceof ApiError ? e.message : String((e && e.message) || e)));
    }
    // A change of one's own roles may change what this page may show.
    if (ok && session.me && user === session.me.identity) {
      try {
        session.me = await api('/me');
      } catch (e) {
        return;
      }
      renderHeader();
      if (!can('users')) {
        render();
        return;
      }
    }
    await loadUsers();
    if (ctx.disposed) return;
    const again = rowOf(user);
    if (!ok) {
      // The API's message, where the focus (and a screen reader) goes next.
      usersStatus.scrollIntoView({ block: 'nearest' });
      usersStatus.focus({ preventScroll: true });
      return;
    }
    const target = again && [...focus, 'th'].map((sel) => again.querySelector(sel)).find((el) => el && !el.disabled);
    if (target) {
      if (target.tagName === 'TH') target.tabIndex = -1;
      target.focus();
    }
  }

  async function setDisabled(u, disable) {
    const sure = await confirmDialog(ctx, disable ? {
      title: `Disable ${u.name}?`,
      message: `${u.name} can no longer log in: their MQTT logins are refused and their console sessions end. Nothing else about the identity changes; you can enable it again.`,
      confirm: `Disable ${u.name}`,
      danger: true,
    } : {
      title: `Enable ${u.name}?`,
      message: `${u.name} can log in again: their MQTT and console logins are accepted, with the roles they hold (${(u.roles || []).join(', ') || 'none'}).`,
      confirm: `Enable ${u.name}`,
    });
    if (!sure) return;
    await change(u.name, disable ? `disable ${u.name}` : `enable ${u.name}`, { path: disable ? 'disable' : 'enable' },
      () => (disable ? `${u.name} is disabled: MQTT logins refused, console sessions ended.` : `${u.name} is enabled again.`),
      [disable ? '[data-testid="user-enable"]' : '[data-testid="user-disable"]']);
  }

  async function revoke(u, role) {
    const self = session.me && u.name === session.me.identity;
    const sure = await confirmDialog(ctx, {
      title: `Revoke ${role} from ${u.name}?`,
      message: `${u.name} loses the permissions of the role ${role} at once, for MQTT and the console.${self ? ' This is your own identity: you may lose access to this page.' : ''}`,
      confirm: `Revoke ${role}`,
      danger: true,
    });
    if (!sure) return;
    await change(u.name, `revoke ${role} from ${u.name}`, { path: 'roles', body: { revoke: role } },
      (res) => `Revoked ${role} from ${u.name}${Array.isArray(res.roles) ? `; roles now: ${res.roles.join(', ') || 'none'}` : ''}.`,
      ['[data-testid="role-add-select"]', '[data-testid="role-revoke"]']);
  }

  async function grant(u, role) {
    await change(u.name, `grant ${role} to ${u.name}`, { path: 'roles', body: { grant: role } },
      (res) => `Granted ${role} to ${u.name}${Array.isArray(res.roles) ? `; roles now: ${res.roles.join(', ')}` : ''}.`,
      ['[data-testid="role-add-select"]', `[data-testid="role-chip"][data-role="${CSS.escape(role)}"] button`]);
  }

  function rolesCell(u) {
    const roles = u.roles || [];
    if (!manage) return h('td', null, roles.join(', ') || '—');
    const chips = h('ul', { class: 'chips role-chips', 'aria-label': `Roles of ${u.name}` }, roles.map((r) => h('li', { class: 'chip role-chip', testid: 'role-chip', dataset: { role: r } },
      h('span', null, r),
      h('button', {
        type: 'button', class: 'chip-x', testid: 'role-revoke', title: `Revoke ${r} from ${u.name}`,
        'aria-label': `Revoke role ${r} from ${u.name}`, onclick: () => revoke(u, r),
      }, h('span', { 'aria-hidden': 'true' }, '×')))));
    const cell = h('td', { class: 'roles-cell' }, roles.length ? chips : h('p', { class: 'muted small' }, 'No roles.'));
    if (!roleNames) return cell;
    const missing = roleNames.filter((r) => !roles.includes(r));
    if (!missing.length) {
      cell.append(h('p', { class: 'muted small' }, 'Holds every role.'));
      return cell;
    }
    const id = uid('role-add');
    const sel = h('select', { id, testid: 'role-add-select' }, h('option', { value: '' }, 'Choose a role…'), missing.map((r) => h('option', { value: r }, r)));
    const add = h('button', { type: 'button', class: 'btn btn-small', testid: 'role-add', 'aria-label': `Add the chosen role to ${u.name}` }, 'Add');
    const hint = h('span', { class: 'role-add-hint small', role: 'status' });
    add.addEventListener('click', () => {
      if (!sel.value) {
        hint.textContent = 'Choose a role first.';
        sel.focus();
        return;
      }
      grant(u, sel.value);
    });
    sel.addEventListener('change', () => {
      hint.textContent = '';
    });
    cell.append(h('div', { class: 'role-add' }, h('label', { for: id, class: 'small' }, `Add role to ${u.name}`), h('div', { class: 'role-add-row' }, sel, add), hint));
    return cell;
  }

  function actionsCell(u) {
    if (session.me && u.name === session.me.identity) return h('td', null, h('span', { class: 'muted small' }, 'You: cannot disable yourself'));
    const b = u.disabled
      ? h('button', { type: 'button', class: 'btn btn-small', testid: 'user-enable', 'aria-label': `Enable ${u.name}`, onclick: () => setDisabled(u, false) }, 'Enable')
      : h('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', testid: 'user-disable', 'aria-label': `Disable ${u.name}`, onclick: () => setDisabled(u, true) }, 'Disable');
    return h('td', null, b);
  }

  async function loadUsers() {
    try {
      const d = await ctx.api('/users');
      const body = h('tbody', null, (d.users || []).map((u) => h('tr', { testid: 'user-row', dataset: { user: u.name }, class: u.disabled ? 'row-disabled' : null },
        h('th', { scope: 'row', class: 'nowrap' }, u.name), h('td', null, u.kind || '—'), rolesCell(u),
        h('td', null, u.disabled ? statusBadge('disabled', 'bad') : statusBadge('active', 'ok')), manage ? actionsCell(u) : null,
        h('td', null, u.break_glass ? statusBadge('break-glass', 'warn') : 'no'), h('td', null, u.certificate ? 'yes' : 'no'), h('td', null, u.description || ''))));
      // The actions next to the state they change (in view on a tablet, too).
      const cols = ['Name', 'Kind', 'Roles', 'State', ...(manage ? ['Actions'] : []), 'Break-glass', 'Certificate', 'Description'];
      clear(usersBody).append(h('div', { class: 'table-wrap' }, h('table', { class: 'data users-table' },
        h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, c)))), body)));
    } catch (e) {
      if (!isAbort(e)) clear(usersBody).append(errorNotice(e, 'the users'));
    }
  }

  async function loadRoles() {
    try {
      const d = await ctx.api('/roles');
      roleNames = (d.roles || []).map((r) => r.name).filter((n) => typeof n === 'string');
      const body = h('tbody', null, (d.roles || []).map((r) => h('tr', { testid: 'role-row' },
        h('th', { scope: 'row', class: 'nowrap' }, r.name), h('td', null, r.description || ''),
        h('td', null, h('ul', { class: 'plain' }, (r.permissions || []).map((p) => h('li', null, h('code', null, typeof p === 'string' ? p : JSON.stringify(p)))))),
        h('td', null, r.builtin ? 'built-in' : 'custom'))));
      clear(rolesBox).append(h('h2', { id: 'roles-h' }, 'Roles'), h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('thead', null, h('tr', null, ['Name', 'Description', 'Permissions', 'Origin'].map((c) => h('th', { scope: 'col' }, c)))), body)));
    } catch (e) {
      if (!isAbort(e)) clear(rolesBox).append(h('h2', { id: 'roles-h' }, 'Roles'), errorNotice(e, 'the roles'));
    }
  }

  if (!showUsers) usersBox.remove();
  if (!showRoles) rolesBox.remove();
  usersStatus.tabIndex = -1;
  // The roles first: the users' "Add role" lists them.
  if (showRoles) await loadRoles();
  if (ctx.disposed) return;
  if (showUsers) await loadUsers();
}

// ----------------------------------------------------------------------- boot

const PAGES = {
  login: pageLogin,
  tree: pageTree,
  tag: pageTag,
  kpi: pageKpi,
  'dead-letters': pageDeadLetters,
  connectors: pageConnectors,
  audit: pageAudit,
  access: pageAccess,
};

async function boot() {
  $('#logout').addEventListener('click', logout);
  $('#skip-link').addEventListener('click', () => {
    const main = $('#main');
    const h1 = main.querySelector('h1');
    (h1 || main).focus();
  });
  window.addEventListener('hashchange', render);
  const main = $('#main');
  try {
    session.me = await api('/me', { expectAuth: false });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      const retry = h('button', { type: 'button', class: 'btn' }, 'Retry');
      retry.addEventListener('click', () => location.reload());
      clear(main).append(errorNotice(e, 'the console'), retry);
      return;
    }
    session.me = null;
  }
  const r = currentRoute();
  if (!session.me && (!r || r.page !== 'login')) {
    if (r) session.returnTo = location.hash;
    location.replace('#/login');
    return;
  }
  if (!r) {
    location.replace(href(defaultPage()));
    return;
  }
  render();
}

boot();
