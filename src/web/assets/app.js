// Tidemark's explorer: a PromQL editor with completion, a time range picker, a uPlot chart
// (legend, hover values, drag to zoom, stacked), a table of the instant result, the query's
// stats, and the whole state in the URL. No build step: this file is served as it is.
'use strict';

// Errors of the page itself, for the browser tests and for the user.
window.tidemarkErrors = [];
window.addEventListener('error', (e) => window.tidemarkErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.tidemarkErrors.push(String(e.reason)));

const $ = (id) => document.getElementById(id);
const RANGES = ['5m', '15m', '1h', '6h', '24h', '7d', '30d', '1y'];
const NICE_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const FUNCTIONS = ['abs', 'absent', 'absent_over_time', 'avg_over_time', 'ceil', 'changes', 'clamp', 'clamp_max',
  'clamp_min', 'count_over_time', 'day_of_month', 'day_of_week', 'delta', 'deriv', 'ema_over_time', 'exp', 'floor',
  'histogram_quantile', 'holt_winters', 'hour', 'idelta', 'increase', 'irate', 'label_join', 'label_replace',
  'last_over_time', 'ln', 'log2', 'log10', 'mad_over_time', 'max_over_time', 'min_over_time', 'minute', 'month',
  'predict_linear', 'present_over_time', 'quantile_over_time', 'rate', 'resets', 'round', 'scalar', 'sort',
  'sort_desc', 'sqrt', 'stddev_over_time', 'stdvar_over_time', 'sum_over_time', 'time', 'timestamp', 'vector',
  'year', 'sum', 'avg', 'min', 'max', 'count', 'group', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile',
  'count_values', 'limitk', 'limit_ratio'];

// ---- state in the URL ----------------------------------------------------------------------

const state = { expr: '', range: '1h', end: '', step: '', tab: 'graph', stacked: false, refresh: 0 };

function readUrl() {
  const p = new URLSearchParams(location.search);
  state.expr = p.get('expr') || '';
  state.range = p.get('range') || '1h';
  state.end = p.get('end') || '';
  state.step = p.get('step') || '';
  state.tab = p.get('tab') === 'table' ? 'table' : 'graph';
  state.stacked = p.get('stacked') === '1';
  state.refresh = Number(p.get('refresh') || 0) || 0;
}

function writeUrl() {
  const p = new URLSearchParams();
  if (state.expr) p.set('expr', state.expr);
  p.set('range', state.range);
  if (state.end) p.set('end', state.end);
  if (state.step) p.set('step', state.step);
  p.set('tab', state.tab);
  if (state.stacked) p.set('stacked', '1');
  if (state.refresh) p.set('refresh', String(state.refresh));
  history.replaceState(null, '', '?' + p.toString());
}

// ---- durations and times -------------------------------------------------------------------

const UNIT = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };

// "2h30m" -> 9000 (seconds); null when it is not a duration.
function parseDuration(s) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/g;
  let total = 0, used = 0, m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT[m[2]];
    used += m[0].length;
  }
  return used === s.length && total > 0 ? total : null;
}

function formatDuration(sec) {
  for (const [u, n] of [['y', 31536000], ['w', 604800], ['d', 86400], ['h', 3600], ['m', 60]]) {
    if (sec >= n && sec % n === 0) return sec / n + u;
  }
  return Math.round(sec) + 's';
}

function endSeconds() {
  if (!state.end) return Date.now() / 1000;
  const n = Number(state.end);
  return Number.isFinite(n) ? n : Date.parse(state.end) / 1000;
}

// The step for a range: about 250 points, rounded up to a whole, readable step.
function autoStep(rangeSec) {
  const raw = Math.max(1, rangeSec / 250);
  return NICE_STEPS.find((s) => s >= raw) || Math.ceil(raw / 86400) * 86400;
}

// ---- the API -------------------------------------------------------------------------------

function authHeaders() {
  const t = sessionStorage.getItem('tidemark.token');
  return t ? { Authorization: 'Bearer ' + t } : {};
}

async function api(path, params) {
  const body = new URLSearchParams(params || {});
  const r = await fetch(path, {
    method: 'POST',
    headers: Object.assign({ 'Content-Type': 'application/x-www-form-urlencoded' }, authHeaders()),
    body,
  });
  let j;
  try {
    j = await r.json();
  } catch (e) {
    throw new Error(`${path}: HTTP ${r.status}, not JSON`);
  }
  if (j.status !== 'success') throw new Error(j.error || `${path}: HTTP ${r.status}`);
  return j;
}

// ---- rendering -----------------------------------------------------------------------------

function seriesName(metric) {
  const name = metric.__name__ || '';
  const rest = Object.keys(metric).filter((k) => k !== '__name__').sort()
    .map((k) => `${k}=${JSON.stringify(metric[k])}`);
  return rest.length ? `${name}{${rest.join(', ')}}` : name || '{}';
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d',
  '#ea580c', '#4f46e5', '#059669', '#9333ea'];

let plot = null;

function showError(msg) {
  const el = $('error');
  if (!msg) {
    el.hidden = true;
    el.textContent = '';
    return;
  }
  el.hidden = false;
  el.textContent = msg;
  // A syntax error's "line:col: parse error" (Prometheus's form): the query's line with a
  // caret under the column, and the editor's cursor there.
  const m = /(\d+):(\d+): parse error/.exec(msg);
  if (m) {
    const line = Number(m[1]);
    const col = Number(m[2]);
    const pos = lineColToOffset(state.expr, line, col);
    const text = state.expr.split('\n')[line - 1];
    if (text !== undefined) el.textContent = msg + '\n\n' + text + '\n' + ' '.repeat(Math.max(0, col - 1)) + '^';
    const ta = $('expr');
    if (pos >= 0 && pos <= ta.value.length) {
      ta.focus();
      ta.setSelectionRange(pos, pos);
    }
  }
}

function lineColToOffset(text, line, col) {
  const lines = text.split('\n');
  if (line < 1 || line > lines.length) return -1;
  let off = 0;
  for (let i = 0; i < line - 1; i++) off += lines[i].length + 1;
  return off + Math.max(0, col - 1);
}

function drawChart(result, start, end, step) {
  const xs = [];
  for (let t = start; t <= end + 1e-9; t += step) xs.push(Math.round(t * 1000) / 1000);
  const index = new Map(xs.map((t, i) => [t, i]));
  let ys = result.map((s) => {
    const y = new Array(xs.length).fill(null);
    for (const [t, v] of s.values) {
      const i = index.get(Math.round(Number(t) * 1000) / 1000);
      if (i !== undefined) y[i] = Number(v);
    }
    return y;
  });
  if (state.stacked) {
    const acc = new Array(xs.length).fill(0);
    ys = ys.map((y) => y.map((v, i) => (v === null ? null : (acc[i] += v))));
  }
  const many = result.length > 40;
  const opts = {
    width: Math.max(300, $('chart').clientWidth || 900),
    height: 360,
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { show: !many, live: true },
    scales: { x: { time: true } },
    // Stacked: each series' fill is the band between it and the one below.
    bands: state.stacked ? result.slice(1).map((_, i) => ({ series: [i + 2, i + 1] })) : undefined,
    series: [{}].concat(result.map((s, i) => ({
      label: seriesName(s.metric),
      stroke: PALETTE[i % PALETTE.length],
      width: 1.25,
      fill: state.stacked ? PALETTE[i % PALETTE.length] + '33' : undefined,
      spanGaps: false,
    }))),
    // Zoom: the selection becomes the range and end, and the query runs again.
    hooks: zoomHooks((range, end) => {
      state.range = formatDuration(range);
      state.end = String(end);
      state.step = '';
      syncControls();
      run();
    }),
  };
  if (plot) plot.destroy();
  $('chart').textContent = '';
  plot = new uPlot(opts, [xs].concat(ys), $('chart'));
  const note = $('legend-note');
  note.hidden = !many;
  note.textContent = many ? `${result.length} series: the legend is hidden above 40; hover the chart for values.` : '';
}

function drawTable(data) {
  const tbody = $('table').querySelector('tbody');
  tbody.textContent = '';
  const rows = [];
  if (data.resultType === 'vector') {
    for (const s of data.result) rows.push([seriesName(s.metric), s.value[1]]);
  } else if (data.resultType === 'matrix') {
    for (const s of data.result) rows.push([seriesName(s.metric), s.values.map((v) => `${v[1]} @${v[0]}`).join('\n')]);
  } else if (data.resultType === 'scalar' || data.resultType === 'string') {
    rows.push([data.resultType, data.result[1]]);
  }
  for (const [name, value] of rows) {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    a.className = 'series';
    a.textContent = name;
    const b = document.createElement('td');
    b.className = 'value';
    b.textContent = value;
    tr.append(a, b);
    tbody.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td colspan="2" class="note">Empty result.</td>';
    tbody.append(tr);
  }
  return rows.length;
}

// Prometheus's annotations of a response, as one line.
function notes(j) {
  const all = (j.warnings || []).map((w) => 'warning: ' + w).concat((j.infos || []).map((i) => 'info: ' + i));
  return all.length ? ' | ' + all.join(' | ') : '';
}

// The samples a query loaded (`stats=all`'s `data.stats`), as a phrase.
function loadedSamples(j) {
  const s = j.data.stats && j.data.stats.samples;
  return s ? `, ${s.totalQueryableSamples.toLocaleString('en-US')} samples loaded` : '';
}

// uPlot's hooks for drag-to-zoom (the explorer's chart and the dashboards' panels): a selection
// of 5 px or more is cleared and handed on as `zoom(range seconds, end unix seconds)`.
function zoomHooks(zoom) {
  return {
    setSelect: [(u) => {
      if (u.select.width < 5) return;
      const lo = u.posToVal(u.select.left, 'x');
      const hi = u.posToVal(u.select.left + u.select.width, 'x');
      u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
      zoom(Math.max(1, Math.round(hi - lo)), Math.round(hi));
    }],
  };
}

// ---- running a query -----------------------------------------------------------------------

let running = 0;

async function run() {
  writeUrl();
  const expr = state.expr.trim();
  if (!expr) {
    document.body.dataset.state = 'idle';
    return;
  }
  const my = ++running;
  document.body.dataset.state = 'loading';
  showError('');
  const rangeSec = parseDuration(state.range) || 3600;
  const end = endSeconds();
  const start = end - rangeSec;
  const step = parseDuration(state.step || '') || autoStep(rangeSec);
  const t0 = performance.now();
  try {
    if (state.tab === 'graph') {
      const j = await api('/api/v1/query_range', { query: expr, start, end, step, stats: 'all' });
      if (my !== running) return;
      const ms = performance.now() - t0;
      const points = j.data.result.reduce((n, s) => n + s.values.length, 0);
      drawChart(j.data.result, start, end, step);
      $('stats').textContent = `${j.data.result.length} series, ${points} points${loadedSamples(j)}, step ${formatDuration(step)}, ${ms.toFixed(0)} ms` + notes(j);
      document.body.dataset.series = String(j.data.result.length);
    } else {
      const j = await api('/api/v1/query', { query: expr, time: end, stats: 'all' });
      if (my !== running) return;
      const ms = performance.now() - t0;
      const rows = drawTable(j.data);
      $('stats').textContent = `${rows} rows${loadedSamples(j)}, ${ms.toFixed(0)} ms` + notes(j);
      document.body.dataset.series = String(rows);
    }
    document.body.dataset.step = String(step);
    document.body.dataset.state = 'ready';
  } catch (e) {
    if (my !== running) return;
    showError(e.message);
    document.body.dataset.state = 'error';
  }
}

// ---- completion ----------------------------------------------------------------------------

const cache = { labels: new Map(), values: new Map() };

async function metricNames() {
  return labelValues('__name__', null);
}

// TYPE and HELP by metric name (/api/v1/metadata), for the completion's notes.
let metadata = null;
async function metricHelp() {
  if (!metadata) {
    metadata = fetch('/api/v1/metadata', { headers: authHeaders() })
      .then((r) => r.json()).then((j) => j.data || {}).catch(() => ({}));
  }
  return metadata;
}

async function labelNames(metric) {
  const key = metric || '';
  if (!cache.labels.has(key)) {
    const p = metric ? { 'match[]': metric } : {};
    cache.labels.set(key, api('/api/v1/labels', p).then((j) => j.data.filter((n) => n !== '__name__')).catch(() => []));
  }
  return cache.labels.get(key);
}

async function labelValues(name, metric) {
  const key = name + '\u0000' + (metric || '');
  if (!cache.values.has(key)) {
    const q = metric ? '?match[]=' + encodeURIComponent(metric) : '';
    cache.values.set(key, fetch('/api/v1/label/' + encodeURIComponent(name) + '/values' + q, { headers: authHeaders() })
      .then((r) => r.json()).then((j) => j.data || []).catch(() => []));
  }
  return cache.values.get(key);
}

// What the cursor is in: a label value, a label name inside braces, or a name.
function context(text, pos) {
  const before = text.slice(0, pos);
  const open = before.lastIndexOf('{');
  const close = before.lastIndexOf('}');
  const metric = (/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{[^{}]*$/.exec(before) || [])[1];
  if (open > close) {
    const v = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)$/.exec(before);
    if (v) return { kind: 'value', label: v[1], prefix: v[3], metric };
    const n = /([a-zA-Z_][a-zA-Z0-9_]*)$/.exec(before);
    return { kind: 'label', prefix: n ? n[1] : '', metric };
  }
  const by = /(?:by|without)\s*\(([^()]*)$/.exec(before);
  if (by) {
    const n = /([a-zA-Z_][a-zA-Z0-9_]*)$/.exec(before);
    return { kind: 'label', prefix: n ? n[1] : '', metric: null };
  }
  const w = /([a-zA-Z_:][a-zA-Z0-9_:]*)$/.exec(before);
  return { kind: 'name', prefix: w ? w[1] : '' };
}

let choices = [];
let chosen = 0;

async function suggest() {
  const ta = $('expr');
  const ctx = context(ta.value, ta.selectionStart);
  let items = [];
  if (ctx.kind === 'value') {
    items = (await labelValues(ctx.label, ctx.metric)).map((v) => ({ text: v, note: ctx.label }));
  } else if (ctx.kind === 'label') {
    items = (await labelNames(ctx.metric)).map((n) => ({ text: n, note: 'label' }));
  } else if (ctx.prefix.length > 0) {
    const help = await metricHelp();
    items = (await metricNames()).map((n) => {
      const m = (help[n] || [])[0];
      return { text: n, note: m ? `${m.type}: ${m.help}` : 'metric' };
    }).concat(FUNCTIONS.map((f) => ({ text: f, note: 'function' })));
  }
  const p = ctx.prefix.toLowerCase();
  choices = items.filter((i) => i.text.toLowerCase().startsWith(p) && i.text !== ctx.prefix).slice(0, 50);
  choices.prefix = ctx.prefix;
  chosen = 0;
  renderChoices();
}

function renderChoices() {
  const ul = $('complete');
  ul.textContent = '';
  ul.hidden = choices.length === 0;
  choices.forEach((c, i) => {
    const li = document.createElement('li');
    li.textContent = c.text;
    const small = document.createElement('small');
    small.textContent = c.note;
    li.append(small);
    if (i === chosen) li.className = 'sel';
    li.addEventListener('mousedown', (e) => {
      e.preventDefault();
      accept(i);
    });
    ul.append(li);
  });
}

function accept(i) {
  const c = choices[i];
  if (!c) return;
  const ta = $('expr');
  const pos = ta.selectionStart;
  const from = pos - (choices.prefix || '').length;
  ta.value = ta.value.slice(0, from) + c.text + ta.value.slice(pos);
  const at = from + c.text.length;
  ta.setSelectionRange(at, at);
  state.expr = ta.value;
  choices = [];
  renderChoices();
}

// ---- controls ------------------------------------------------------------------------------

let timer = null;

function syncControls() {
  $('expr').value = state.expr;
  const preset = RANGES.includes(state.range);
  $('range').value = preset ? state.range : 'custom';
  $('custom-range').hidden = preset;
  $('custom-range').value = preset ? '' : state.range;
  const end = state.end ? new Date(endSeconds() * 1000) : null;
  $('end').value = end ? new Date(end.getTime() - end.getTimezoneOffset() * 60000).toISOString().slice(0, 19) : '';
  $('step').value = state.step;
  $('stacked').checked = state.stacked;
  $('refresh').value = String(state.refresh);
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === state.tab);
  $('graph-view').hidden = state.tab !== 'graph';
  $('table-view').hidden = state.tab !== 'table';
  clearInterval(timer);
  if (state.refresh > 0) timer = setInterval(run, state.refresh * 1000);
}

function wire() {
  const ta = $('expr');
  $('explorer').addEventListener('submit', (e) => {
    e.preventDefault();
    state.expr = ta.value;
    choices = [];
    renderChoices();
    run();
  });
  ta.addEventListener('input', () => {
    state.expr = ta.value;
    suggest();
  });
  ta.addEventListener('blur', () => setTimeout(() => { choices = []; renderChoices(); }, 100));
  ta.addEventListener('keydown', (e) => {
    if (choices.length) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        chosen = (chosen + (e.key === 'ArrowDown' ? 1 : choices.length - 1)) % choices.length;
        renderChoices();
        return;
      }
      if (e.key === 'Tab' || (e.key === 'Enter' && !e.shiftKey)) {
        e.preventDefault();
        accept(chosen);
        return;
      }
      if (e.key === 'Escape') {
        choices = [];
        renderChoices();
        return;
      }
    }
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('explorer').requestSubmit();
    }
  });
  $('range').addEventListener('change', () => {
    const v = $('range').value;
    if (v === 'custom') {
      $('custom-range').hidden = false;
      $('custom-range').focus();
      return;
    }
    state.range = v;
    state.step = '';
    syncControls();
    run();
  });
  $('custom-range').addEventListener('change', () => {
    const v = $('custom-range').value.trim();
    if (parseDuration(v) === null) {
      showError(`range "${v}": not a duration (use e.g. 90m, 2h30m, 3d)`);
      return;
    }
    state.range = v;
    state.step = '';
    syncControls();
    run();
  });
  $('end').addEventListener('change', () => {
    const v = $('end').value;
    state.end = v ? String(Math.round(new Date(v).getTime() / 1000)) : '';
    syncControls();
    run();
  });
  $('step').addEventListener('change', () => {
    const v = $('step').value.trim();
    if (v && parseDuration(v) === null) {
      showError(`step "${v}": not a duration (use e.g. 15s, 1m)`);
      return;
    }
    state.step = v;
    run();
  });
  $('refresh').addEventListener('change', () => {
    state.refresh = Number($('refresh').value) || 0;
    syncControls();
    writeUrl();
  });
  $('stacked').addEventListener('change', () => {
    state.stacked = $('stacked').checked;
    run();
  });
  for (const b of document.querySelectorAll('.tab')) {
    b.addEventListener('click', () => {
      state.tab = b.dataset.tab;
      syncControls();
      run();
    });
  }
  document.addEventListener('tidemark-token', () => {
    metadata = null;
    cache.labels.clear();
    cache.values.clear();
    run();
  });
  window.addEventListener('resize', () => {
    if (plot) plot.setSize({ width: Math.max(300, $('chart').clientWidth), height: 360 });
  });
}

// The page this URL shows: the server sends this same file for each of them.
const PAGE = location.pathname.startsWith('/d/') ? 'dashboard'
  : ({ '/alerts': 'alerts', '/targets': 'targets', '/status': 'status', '/dashboards': 'dashboards' })[location.pathname.replace(/\/+$/, '')] || 'explorer';
for (const a of document.querySelectorAll('header nav a[data-page]')) a.classList.toggle('active', a.dataset.page === PAGE.replace(/^dashboard$/, 'dashboards'));
document.getElementById(PAGE + '-page').hidden = false;
// The token (kept for this browser session only); each view reloads with it.
$('token').addEventListener('click', () => {
  const t = prompt('Bearer token for this browser session (empty: none)', sessionStorage.getItem('tidemark.token') || '');
  if (t === null) return;
  if (t) sessionStorage.setItem('tidemark.token', t);
  else sessionStorage.removeItem('tidemark.token');
  document.dispatchEvent(new Event('tidemark-token'));
});
if (PAGE === 'explorer') {
  readUrl();
  wire();
  syncControls();
  run();
}
