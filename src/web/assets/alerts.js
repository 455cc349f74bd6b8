// Tidemark's alerts view (`/alerts`): firing alerts as the routing groups them
// (/api/v2/alerts/groups), pending alerts (/api/v1/alerts), silences (list, create from an
// alert's labels, expire: /api/v2/silences, which need an admin token), rules with health and
// last evaluation (/api/v1/rules), and notifications by receiver (/api/v1/notifications).
// Uses app.js's helpers ($, api, authHeaders, seriesName).
'use strict';

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function getJson(path) {
  const r = await fetch(path, { headers: authHeaders() });
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${j && (j.error || JSON.stringify(j))}`);
  return j;
}

function since(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  const d = s >= 86400 ? Math.floor(s / 86400) + 'd ' : '';
  const h = s >= 3600 ? Math.floor((s % 86400) / 3600) + 'h ' : '';
  return `${d}${h}${Math.floor((s % 3600) / 60)}m ${s % 60}s ago (${new Date(t).toLocaleString()})`;
}

function chips(labels, skip) {
  return Object.keys(labels).sort().filter((k) => k !== skip)
    .map((k) => el('span', { class: 'chip' }, `${k}="${labels[k]}"`));
}

// alertname -> the rule's expression, for the link into the explorer.
let ruleQueries = new Map();

function alertCard(a, state) {
  const name = a.labels.alertname || '';
  const ann = a.annotations || {};
  const q = ruleQueries.get(name);
  return el('div', { class: 'alert', 'data-alertname': name, 'data-state': state },
    el('span', { class: 'badge ' + state }, state),
    el('span', { class: 'name' }, name),
    ...chips(a.labels, 'alertname'),
    ann.summary ? el('div', { class: 'summary' }, ann.summary) : null,
    ann.description ? el('div', { class: 'desc' }, ann.description) : null,
    el('div', { class: 'meta' },
      `active since ${since(a.startsAt || a.activeAt)}`,
      a.status && a.status.silencedBy && a.status.silencedBy.length ? ` · silenced by ${a.status.silencedBy.join(', ')}` : '',
      a.status && a.status.inhibitedBy && a.status.inhibitedBy.length ? ' · inhibited' : '',
      q ? ' · rule: ' : '',
      q ? el('a', { href: '/?expr=' + encodeURIComponent(q) + '&range=1h' }, q) : null,
      ' ',
      el('button', { type: 'button', class: 'silence', onclick: () => prefillSilence(a.labels) }, 'Silence')));
}

function prefillSilence(labels) {
  $('sil-matchers').value = Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`).join(', ');
  $('sil-comment').focus();
}

// 'a="x", b=~"y.*"' -> Alertmanager's matchers.
function parseMatchers(text) {
  const out = [];
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
  let m;
  let at = 0;
  while (at < text.length && (m = re.exec(text)) !== null) {
    out.push({ name: m[1], value: JSON.parse('"' + m[3] + '"'), isRegex: m[2].includes('~'), isEqual: !m[2].includes('!') });
    at = re.lastIndex;
  }
  if (at < text.trim().length || !out.length) {
    throw new Error(`matchers: expected name="value" pairs separated by commas, at character ${at + 1} of ${JSON.stringify(text)}`);
  }
  return out;
}

function showAlertsError(msg) {
  const e = $('alerts-error');
  e.hidden = !msg;
  e.textContent = msg || '';
}

async function createSilence(ev) {
  ev.preventDefault();
  try {
    const matchers = parseMatchers($('sil-matchers').value);
    const dur = parseDuration($('sil-duration').value.trim());
    if (!dur) throw new Error(`duration "${$('sil-duration').value}": not a duration (e.g. 30m, 2h, 1d)`);
    const now = Date.now();
    const r = await fetch('/api/v2/silences', {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
      body: JSON.stringify({
        matchers,
        startsAt: new Date(now).toISOString(),
        endsAt: new Date(now + dur * 1000).toISOString(),
        createdBy: $('sil-creator').value || 'tidemark-ui',
        comment: $('sil-comment').value || 'created in the Tidemark UI',
      }),
    });
    const j = await r.json().catch(() => null);
    if (r.status === 401 || r.status === 403) throw new Error('creating a silence needs an admin token: set one with "Token" (top right)');
    if (!r.ok) throw new Error(`silence: HTTP ${r.status}: ${JSON.stringify(j)}`);
    showAlertsError('');
    document.body.dataset.silence = j.silenceID || '';
    await loadAlerts();
  } catch (e) {
    showAlertsError(e.message);
  }
}

async function expireSilence(id) {
  const r = await fetch('/api/v2/silence/' + encodeURIComponent(id), { method: 'DELETE', headers: authHeaders() });
  if (r.status === 401 || r.status === 403) {
    showAlertsError('expiring a silence needs an admin token: set one with "Token" (top right)');
    return;
  }
  if (!r.ok) showAlertsError(`expire ${id}: HTTP ${r.status}`);
  await loadAlerts();
}

function fillTable(id, rows) {
  const tbody = $(id).querySelector('tbody');
  tbody.textContent = '';
  for (const r of rows) tbody.append(r);
  if (!rows.length) {
    const cols = $(id).querySelectorAll('thead th').length;
    tbody.append(el('tr', {}, el('td', { colspan: String(cols), class: 'note' }, 'None.')));
  }
}

async function loadAlerts() {
  document.body.dataset.state = 'loading';
  try {
    const [rules, groups, v1, silences, outbox] = await Promise.all([
      getJson('/api/v1/rules'),
      getJson('/api/v2/alerts/groups'),
      getJson('/api/v1/alerts'),
      getJson('/api/v2/silences'),
      getJson('/api/v1/notifications').catch(() => ({ data: { queued: [], delivered: [] } })),
    ]);
    ruleQueries = new Map();
    const ruleRows = [];
    for (const g of rules.data.groups || []) {
      for (const r of g.rules || []) {
        if (r.type === 'alerting') ruleQueries.set(r.name, r.query);
        const health = r.health || 'unknown';
        ruleRows.push(el('tr', {},
          el('td', {}, g.name),
          el('td', {}, el('a', { href: '/?expr=' + encodeURIComponent(r.query) + '&range=1h' }, r.name)),
          el('td', {}, r.type),
          el('td', {}, r.state || ''),
          el('td', {}, el('span', { class: 'badge ' + (health === 'ok' ? 'ok' : 'err') }, health), r.lastError || ''),
          el('td', {}, r.lastEvaluation ? since(r.lastEvaluation) : 'never')));
      }
    }
    fillTable('rules', ruleRows);

    const box = $('groups');
    box.textContent = '';
    let firing = 0;
    for (const g of groups) {
      const cards = g.alerts.map((a) => {
        const st = a.status && a.status.state === 'suppressed' ? 'suppressed' : 'firing';
        firing += st === 'firing' ? 1 : 0;
        return alertCard(a, st);
      });
      box.append(el('div', { class: 'group' },
        el('header', {}, el('strong', {}, g.receiver.name), ...chips(g.labels)),
        ...cards));
    }
    if (!groups.length) box.append(el('p', { class: 'note' }, 'No alerts are firing.'));
    document.body.dataset.firing = String(firing);

    const pend = $('pending');
    pend.textContent = '';
    const pending = (v1.data.alerts || []).filter((a) => a.state === 'pending');
    for (const a of pending) pend.append(alertCard(a, 'pending'));
    if (!pending.length) pend.append(el('p', { class: 'note' }, 'No alerts are pending.'));

    fillTable('silences', silences
      .sort((a, b) => (a.status.state > b.status.state ? 1 : -1))
      .map((s) => el('tr', { 'data-id': s.id, 'data-state': s.status.state },
        el('td', {}, el('span', { class: 'badge ' + s.status.state }, s.status.state)),
        el('td', {}, ...s.matchers.map((m) => el('span', { class: 'chip' },
          `${m.name}${m.isRegex ? (m.isEqual === false ? '!~' : '=~') : (m.isEqual === false ? '!=' : '=')}"${m.value}"`))),
        el('td', {}, new Date(s.endsAt).toLocaleString()),
        el('td', {}, s.createdBy),
        el('td', {}, s.comment),
        el('td', {}, s.status.state === 'expired' ? '' : el('button', { type: 'button', class: 'expire', onclick: () => expireSilence(s.id) }, 'Expire')))));

    const by = new Map();
    const row = (name) => {
      if (!by.has(name)) by.set(name, { delivered: 0, queued: 0, error: '' });
      return by.get(name);
    };
    for (const d of outbox.data.delivered || []) row(d.receiver).delivered += 1;
    for (const q of outbox.data.queued || []) {
      const r = row(q.receiver);
      r.queued += 1;
      if (q.lastError) r.error = `${q.integration}: ${q.lastError} (${q.attempts} attempts)`;
    }
    fillTable('outbox', [...by.entries()].sort().map(([name, r]) => el('tr', {},
      el('td', {}, name), el('td', {}, String(r.delivered)), el('td', {}, String(r.queued)), el('td', {}, r.error))));

    $('alerts-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    showAlertsError('');
    document.body.dataset.state = 'ready';
  } catch (e) {
    showAlertsError(e.message);
    document.body.dataset.state = 'error';
  }
}

if (PAGE === 'alerts') {
  $('silence-form').addEventListener('submit', createSilence);
  $('alerts-refresh').addEventListener('click', loadAlerts);
  document.addEventListener('tidemark-token', loadAlerts);
  loadAlerts();
  setInterval(loadAlerts, 10000);
}
