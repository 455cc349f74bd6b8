// Tidemark's dashboards (`/dashboards`, `/d/<uid>`): Grafana's dashboard JSON model, the
// subset schemas/dashboard.schema.json documents. Panels `timeseries` (and the older
// `graph`), `stat`, `gauge`, `bargauge`, `table` and `text` with PromQL `targets`,
// `legendFormat`, units, thresholds, `gridPos` layout and rows; template variables `query`
// (`label_values(...)`), `custom` and `interval`, with `$var`, `${var}`, `[[var]]`,
// `$__rate_interval`, `$__interval` and `$__range`. Any other panel type shows a placeholder
// naming it. Uses app.js's and alerts.js's helpers.
'use strict';

// ---- units and thresholds ------------------------------------------------------------------

// `v` with `d` decimals; an integer as it is, and a value too small for `d` decimals with two
// significant digits (0.004 stays 0.004, not 0.00).
function fixed(v, d) {
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  if (v !== 0 && Math.abs(v) < 0.5 * Math.pow(10, -d)) return String(Number(v.toPrecision(2)));
  return v.toFixed(d);
}

// Rounded to hundredths where that keeps it (so 2.9999999 shows as 3), not below them.
function r2(v) {
  return Math.abs(v) >= 0.01 ? Math.round(v * 100) / 100 : v;
}

// Decimals that tell an axis's ticks apart (0.25 apart: 2), at least 1, at most 6.
function tickDecimals(ticks) {
  for (let d = 1; d < 6; d++) {
    const k = Math.pow(10, d);
    if (ticks.every((t) => Math.abs(Math.round(t * k) - t * k) < 1e-6 * k)) return d;
  }
  return 6;
}

function scaled(v, base, units, d) {
  let i = 0;
  while (Math.abs(v) >= base && i < units.length - 1) {
    v /= base;
    i++;
  }
  return fixed(r2(v), d) + (units[i] ? ' ' + units[i] : '');
}

function formatUnit(v, unit, decimals) {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  const d = decimals ?? 2;
  switch (unit) {
    case 'percent': return fixed(r2(v), d) + '%';
    case 'percentunit': return fixed(r2(v * 100), d) + '%';
    case 'bytes': return scaled(v, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], d);
    case 'decbytes': return scaled(v, 1000, ['B', 'kB', 'MB', 'GB', 'TB', 'PB'], d);
    case 'Bps': case 'binBps': return scaled(v, 1024, ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s'], d);
    case 's': return v >= 86400 ? fixed(v / 86400, 1) + ' day' : v >= 3600 ? fixed(v / 3600, 1) + ' h'
      : v >= 60 ? fixed(v / 60, 1) + ' min' : v >= 1 || v === 0 ? fixed(r2(v), d) + ' s' : fixed(v * 1000, 1) + ' ms';
    case 'ms': return v >= 1000 ? formatUnit(v / 1000, 's', decimals) : fixed(r2(v), d) + ' ms';
    case 'reqps': return scaled(v, 1000, ['req/s', 'K req/s', 'M req/s', 'B req/s'], d);
    case 'ops': return scaled(v, 1000, ['ops/s', 'K ops/s', 'M ops/s', 'B ops/s'], d);
    case 'none': return fixed(v, d);
    default: return scaled(v, 1000, ['', 'K', 'Mil', 'Bil', 'Tri'], d).trim();
  }
}

const COLORS = { green: '#16a34a', red: '#dc2626', orange: '#ea580c', yellow: '#ca8a04', blue: '#2563eb',
  purple: '#7c3aed', 'dark-red': '#991b1b', 'dark-green': '#166534', 'semi-dark-red': '#b91c1c', text: '#1d2330' };

function color(c) {
  return COLORS[c] || c || '#2563eb';
}

// The color of `v` under Grafana's absolute thresholds (the last step at or below it).
function thresholdColor(v, defaults) {
  const steps = (((defaults || {}).thresholds || {}).steps || []).slice();
  let out = steps.length ? steps[0].color : 'green';
  for (const s of steps) if (s.value === null || s.value === undefined || v >= s.value) out = s.color;
  return color(out);
}

// Grafana's value mappings (`fieldConfig.defaults.mappings`): `value` (exact values),
// `range` (from..to, inclusive) and `special` (`null`, `nan`, `null+nan`, `true`, `false`,
// `empty`), the first that matches; its `text` (and `color`, when set) replace the value's.
// Returns null when none matches.
function mapValue(v, mappings) {
  for (const m of mappings || []) {
    const o = m.options || {};
    if (m.type === 'value') {
      const key = v === null || v === undefined ? null : String(v);
      if (key !== null && Object.prototype.hasOwnProperty.call(o, key)) return o[key];
    } else if (m.type === 'range') {
      const from = o.from ?? -Infinity;
      const to = o.to ?? Infinity;
      if (v !== null && !Number.isNaN(v) && v >= from && v <= to) return o.result || {};
    } else if (m.type === 'special') {
      const isNull = v === null || v === undefined;
      const isNaN = !isNull && Number.isNaN(v);
      const hit = { null: isNull, nan: isNaN, 'null+nan': isNull || isNaN, true: v === 1, false: v === 0 }[o.match];
      if (hit) return o.result || {};
    }
  }
  return null;
}

// A value as a panel shows it: mapped text where a mapping matches, else with its unit; and its
// color (a mapping's, else the thresholds').
function shown(v, defaults) {
  const m = mapValue(v, defaults.mappings);
  const text = m && m.text !== undefined && m.text !== '' ? m.text : formatUnit(v, defaults.unit, defaults.decimals);
  const col = m && m.color ? color(m.color) : thresholdColor(v, defaults);
  return { text, col };
}

// A series' field config: the panel's defaults with Grafana's overrides applied whose matcher
// takes it (`byName`: its display name, `byRegexp`, `byFrameRefID`: its target's refId).
// Properties: `displayName`, `unit`, `decimals`, `min`, `max`, `thresholds`, `mappings`,
// `color` (a fixed color) and `custom.hideFrom` (`viz`: not drawn); others are left out.
function fieldConfigFor(p, s) {
  const fc = p.fieldConfig || {};
  const cfg = Object.assign({}, fc.defaults || {});
  for (const o of fc.overrides || []) {
    const m = o.matcher || {};
    let hit = false;
    try {
      hit = (m.id === 'byName' && m.options === s.name)
        || (m.id === 'byRegexp' && new RegExp('^(?:' + m.options + ')$').test(s.name))
        || (m.id === 'byFrameRefID' && m.options === s.refId);
    } catch (e) {
      hit = false;
    }
    if (!hit) continue;
    for (const prop of o.properties || []) {
      if (['displayName', 'unit', 'decimals', 'min', 'max', 'thresholds', 'mappings', 'color'].includes(prop.id)) cfg[prop.id] = prop.value;
      else if (prop.id === 'custom.hideFrom') cfg.hidden = !!(prop.value || {}).viz;
    }
  }
  return cfg;
}

// The results with their field config, display names applied.
function withFieldConfig(p, results) {
  return results.map((s) => {
    const cfg = fieldConfigFor(p, s);
    return Object.assign({}, s, { cfg, name: cfg.displayName || s.name });
  });
}

// ---- variables -----------------------------------------------------------------------------

const dash = { json: null, vars: new Map(), range: 3600, end: '', refresh: 0, timer: null };

// A value as a regex inside a PromQL string: the regex's backslash doubled for the string
// ("127\\.0\\.0\\.1"), as Grafana's Prometheus data source writes it.
function escapeRegex(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\\\$&');
}

// The text a variable stands for in a query: one value as it is; several, or All, as a
// regex alternation (Grafana's Prometheus formatting).
function varText(v) {
  const values = v.current === '$__all' ? v.options.filter((o) => o !== '$__all') : [].concat(v.current);
  if (v.current === '$__all' && v.allValue) return v.allValue;
  // A variable that can hold several values is used in `=~`: its values are regex-escaped.
  const several = v.multi || v.options.includes('$__all');
  if (values.length === 1) return several ? escapeRegex(values[0]) : values[0];
  return '(' + values.map(escapeRegex).join('|') + ')';
}

function substitute(text, step) {
  const builtin = {
    __interval: formatDuration(step),
    __rate_interval: formatDuration(Math.max(step + 15, 4 * 15)),
    __range: formatDuration(dash.range),
    __range_s: String(dash.range),
  };
  const value = (name) => {
    if (name in builtin) return builtin[name];
    const v = dash.vars.get(name);
    return v ? varText(v) : null;
  };
  return text.replace(/\$\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|\[\[([a-zA-Z0-9_]+)\]\]|\$([a-zA-Z0-9_]+)/g,
    (m, a, b, c) => value(a || b || c) ?? m);
}

async function variableOptions(def) {
  const q = typeof def.query === 'string' ? def.query : (def.query && def.query.query) || '';
  if (def.type === 'custom' || def.type === 'interval') {
    return q.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (s.includes(' : ') ? s.split(' : ')[1] : s));
  }
  const m = /^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(substitute(q, 60));
  if (!m) throw new Error(`variable ${def.name}: query ${JSON.stringify(q)} is not label_values(...) (supported: label_values(label), label_values(selector, label))`);
  const match = m[1] ? '?match[]=' + encodeURIComponent(m[1]) : '';
  const j = await getJson('/api/v1/label/' + encodeURIComponent(m[2]) + '/values' + match);
  return j.data;
}

async function loadVariables() {
  const bar = $('dash-vars');
  bar.textContent = '';
  const url = new URLSearchParams(location.search);
  for (const def of ((dash.json.templating || {}).list || [])) {
    if (!['query', 'custom', 'interval'].includes(def.type)) {
      bar.append(el('span', { class: 'note' }, `variable ${def.name}: type "${def.type}" is not supported`));
      continue;
    }
    const options = await variableOptions(def);
    if (def.includeAll && def.type !== 'interval') options.unshift('$__all');
    const fromUrl = url.getAll('var-' + def.name);
    const cur = (def.current || {}).value;
    let current = fromUrl.length ? (def.multi ? fromUrl : fromUrl[0]) : cur !== undefined ? cur : options[0];
    if (Array.isArray(current) && current.includes('$__all')) current = '$__all';
    if (!def.multi && Array.isArray(current)) current = current[0];
    if (!def.multi && current !== '$__all' && !options.includes(current)) current = options[0];
    const v = { type: def.type, options, current, allValue: def.allValue, multi: !!def.multi };
    dash.vars.set(def.name, v);
    const sel = el('select', { id: 'var-' + def.name, 'data-var': def.name });
    if (v.multi) sel.multiple = true;
    for (const o of options) {
      const opt = el('option', { value: o }, o === '$__all' ? 'All' : o);
      opt.selected = Array.isArray(current) ? current.includes(o) : current === o;
      sel.append(opt);
    }
    const picker = v.multi ? multiPicker(sel) : null;
    sel.addEventListener('change', () => {
      const chosen = [...sel.selectedOptions].map((o) => o.value);
      v.current = v.multi ? (chosen.includes('$__all') ? '$__all' : chosen) : chosen[0];
      if (picker) picker.sync();
      writeDashUrl();
      renderPanels();
    });
    bar.append(el('label', {}, (def.label || def.name) + ' ', picker ? picker.node : sel));
  }
}

// A multi-value variable as Grafana shows one: a one-line dropdown of checkboxes, whose
// summary names the chosen values. The `<select multiple>` it drives (hidden inside it) holds
// the state, so a script can still set the variable through the select.
function multiPicker(sel) {
  sel.hidden = true;
  const summary = el('summary', {});
  const list = el('div', { class: 'multi-list' });
  const node = el('details', { class: 'multi', 'data-var': sel.dataset.var }, summary, list, sel);
  const boxes = [...sel.options].map((o) => {
    const box = el('input', { type: 'checkbox', value: o.value });
    box.addEventListener('change', () => {
      if (o.value === '$__all' && box.checked) {
        for (const other of sel.options) other.selected = other.value === '$__all';
      } else {
        o.selected = box.checked;
        if (box.checked) for (const other of sel.options) if (other.value === '$__all') other.selected = false;
      }
      if (!sel.selectedOptions.length && sel.options.length) sel.options[0].selected = true;
      sel.dispatchEvent(new Event('change'));
    });
    list.append(el('label', {}, box, ' ' + o.textContent));
    return [o, box];
  });
  const sync = () => {
    for (const [o, box] of boxes) box.checked = o.selected;
    summary.textContent = [...sel.selectedOptions].map((o) => o.textContent).join(' + ') || 'none';
  };
  sync();
  return { node, sync };
}

// A new range (seconds) and end (unix seconds, '' for now): the picker shows it, the URL keeps
// it, and the panels query again.
function setDashRange(range, end) {
  dash.range = range;
  dash.end = end;
  const rsel = $('dash-range');
  const text = formatDuration(range);
  if (![...rsel.options].some((o) => o.value === text)) rsel.append(el('option', {}, text));
  rsel.value = text;
  writeDashUrl();
  renderPanels();
}

function writeDashUrl() {
  const p = new URLSearchParams();
  p.set('range', formatDuration(dash.range));
  if (dash.end) p.set('end', dash.end);
  if (dash.refresh) p.set('refresh', String(dash.refresh));
  for (const [name, v] of dash.vars) for (const c of [].concat(v.current)) p.append('var-' + name, c);
  history.replaceState(null, '', location.pathname + '?' + p.toString());
}

// ---- panels --------------------------------------------------------------------------------

function legendName(format, metric) {
  if (!format) return seriesName(metric);
  return format.replace(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g, (m, k) => metric[k] ?? '');
}

function reduce(values, calc) {
  const xs = values.map((v) => Number(v[1])).filter((x) => !Number.isNaN(x));
  if (!xs.length) return null;
  switch (calc) {
    case 'mean': return xs.reduce((a, b) => a + b, 0) / xs.length;
    case 'max': return Math.max(...xs);
    case 'min': return Math.min(...xs);
    case 'sum': return xs.reduce((a, b) => a + b, 0);
    case 'first': case 'firstNotNull': return xs[0];
    default: return xs[xs.length - 1];
  }
}

const SUPPORTED = ['timeseries', 'graph', 'stat', 'gauge', 'bargauge', 'table', 'text'];

async function queryPanel(p, body) {
  const end = dash.end ? Number(dash.end) : Date.now() / 1000;
  const start = end - dash.range;
  const width = Math.max(200, body.clientWidth || 400);
  const step = Math.max(autoStep(dash.range), Math.ceil(dash.range / width));
  const instant = p.type === 'table';
  const results = [];
  const exprs = [];
  for (const t of (p.targets || []).filter((t) => t.expr && !t.hide)) {
    const expr = substitute(t.expr, step);
    exprs.push(expr);
    const j = instant
      ? await api('/api/v1/query', { query: expr, time: end })
      : await api('/api/v1/query_range', { query: expr, start, end, step });
    for (const s of j.data.result) results.push({ name: legendName(substitute(t.legendFormat || '', step), s.metric), refId: t.refId, metric: s.metric, values: s.values || [s.value] });
  }
  return { results: withFieldConfig(p, results), start, end, step, exprs };
}

function drawTimeseries(p, body, all) {
  const defaults = (p.fieldConfig || {}).defaults || {};
  const unit = defaults.unit;
  const r = Object.assign({}, all, { results: all.results.filter((s) => !s.cfg.hidden) });
  const stack = ((defaults.custom || {}).stacking || {}).mode === 'normal' || p.stack === true;
  const xs = [];
  for (let t = r.start; t <= r.end + 1e-9; t += r.step) xs.push(Math.round(t * 1000) / 1000);
  const index = new Map(xs.map((t, i) => [t, i]));
  let ys = r.results.map((s) => {
    const y = new Array(xs.length).fill(null);
    for (const [t, v] of s.values) {
      const i = index.get(Math.round(Number(t) * 1000) / 1000);
      if (i !== undefined) y[i] = Number(v);
    }
    return y;
  });
  if (stack) {
    const acc = new Array(xs.length).fill(0);
    ys = ys.map((y) => y.map((v, i) => (v === null ? null : (acc[i] += v))));
  }
  // The legend (one wrapped line or two, for at most 8 series) sits under the plot.
  const legend = r.results.length <= 8;
  const h = Math.max(60, body.clientHeight - (legend ? (r.results.length > 4 ? 44 : 24) : 4));
  const u = new uPlot({
    width: Math.max(150, body.clientWidth - 4),
    height: h,
    legend: { show: legend },
    cursor: { drag: { x: true, y: false, setScale: false } },
    scales: { x: { time: true } },
    axes: [{}, { values: (_, ticks) => ticks.map((v) => formatUnit(v, unit, tickDecimals(ticks))), size: 92 }],
    // Drag-to-zoom, as in Grafana: the selection becomes the dashboard's range and end, and
    // every panel queries again.
    hooks: zoomHooks((range, end) => setDashRange(range, String(end))),
    bands: stack ? r.results.slice(1).map((_, i) => ({ series: [i + 2, i + 1] })) : undefined,
    series: [{}].concat(r.results.map((s, i) => {
      const fixed = s.cfg.color && s.cfg.color.mode === 'fixed' && s.cfg.color.fixedColor;
      const stroke = fixed ? color(fixed) : PALETTE[i % PALETTE.length];
      return {
        label: s.name,
        stroke,
        fill: stack ? stroke + '33' : undefined,
        value: (_, v) => formatUnit(v, s.cfg.unit || unit, s.cfg.decimals),
        width: 1.25,
      };
    })),
  }, [xs].concat(ys), body);
  return u;
}

function drawStat(p, body, r) {
  const calc = ((((p.options || {}).reduceOptions || {}).calcs) || ['lastNotNull'])[0];
  const box = el('div', { class: 'stat-values' });
  for (const s of r.results) {
    const v = reduce(s.values, calc);
    const { text, col } = shown(v, s.cfg);
    let shape = null;
    if (p.type === 'gauge' || p.type === 'bargauge') {
      const min = s.cfg.min ?? 0;
      const max = s.cfg.max ?? (s.cfg.unit === 'percentunit' ? 1 : 100);
      const frac = v === null ? 0 : Math.min(1, Math.max(0, (v - min) / (max - min || 1)));
      shape = p.type === 'gauge'
        ? el('div', { class: 'gauge', style: `background: conic-gradient(from 270deg, ${col} ${frac * 180}deg, #e5e7eb 0 180deg, transparent 0)` })
        : el('div', { class: 'bar-track' }, el('div', { style: `width: ${(frac * 100).toFixed(1)}%; background: ${col}` }));
    }
    box.append(el('div', { class: 'stat ' + p.type },
      p.type === 'bargauge' ? el('div', { class: 'stat-name' }, s.name) : null,
      shape,
      el('div', { class: 'stat-value', style: `color: ${col}` }, text),
      p.type !== 'bargauge' && r.results.length > 1 ? el('div', { class: 'stat-name' }, s.name) : null));
  }
  body.append(box);
}

function drawPanelTable(p, body, r) {
  const keys = [...new Set(r.results.flatMap((s) => Object.keys(s.metric)))].sort();
  const table = el('table', { class: 'panel-table' },
    el('thead', {}, el('tr', {}, ...keys.map((k) => el('th', {}, k)), el('th', {}, 'Value'))),
    el('tbody', {}, ...r.results.map((s) => el('tr', {},
      ...keys.map((k) => el('td', {}, s.metric[k] ?? '')),
      el('td', { class: 'value' }, shown(Number(s.values[s.values.length - 1][1]), s.cfg).text)))));
  body.append(table);
}

async function renderPanel(p, box) {
  const body = box.querySelector('.panel-body');
  // The previous chart's listeners go with it (uPlot keeps some on the window).
  if (box.plot) box.plot.destroy();
  box.plot = null;
  body.textContent = '';
  box.dataset.state = 'loading';
  if (!SUPPORTED.includes(p.type)) {
    body.append(el('div', { class: 'placeholder' }, `Panel type "${p.type}" is not supported by Tidemark's UI (supported: ${SUPPORTED.join(', ')}).`));
    box.dataset.state = 'unsupported';
    return;
  }
  if (p.type === 'text') {
    body.append(el('div', { class: 'text-panel' }, ((p.options || {}).content) || p.content || ''));
    box.dataset.state = 'ready';
    return;
  }
  try {
    const r = await queryPanel(p, body);
    box.dataset.query = r.exprs.join('\n');
    box.dataset.series = String(r.results.length);
    if (!r.results.length) body.append(el('div', { class: 'placeholder' }, 'No data'));
    else if (p.type === 'timeseries' || p.type === 'graph') box.plot = drawTimeseries(p, body, r);
    else if (p.type === 'table') {
      body.classList.add('scroll');
      drawPanelTable(p, body, r);
    }
    else drawStat(p, body, r);
    box.dataset.state = 'ready';
  } catch (e) {
    body.append(el('div', { class: 'error' }, e.message));
    box.dataset.state = 'error';
  }
}

// Rows and panels in layout order; a collapsed row's own panels follow it, hidden.
function flatten(panels) {
  const out = [];
  for (const p of panels || []) {
    out.push(p);
    if (p.type === 'row') for (const q of p.panels || []) out.push(Object.assign({ inRow: p.id, hidden: !!p.collapsed }, q));
  }
  return out;
}

async function renderPanels() {
  document.body.dataset.state = 'loading';
  const grid = $('dash-grid');
  grid.textContent = '';
  const jobs = [];
  for (const p of flatten(dash.json.panels)) {
    const g = p.gridPos || { x: 0, y: 0, w: 12, h: 8 };
    const style = `grid-column: ${g.x + 1} / span ${g.w}; grid-row: ${g.y + 1} / span ${g.h}`;
    if (p.type === 'row') {
      const head = el('div', { class: 'dash-row', style, 'data-row': String(p.id) }, (p.collapsed ? '▸ ' : '▾ ') + substitute(p.title || '', 60));
      head.addEventListener('click', () => {
        p.collapsed = !p.collapsed;
        renderPanels();
      });
      grid.append(head);
      continue;
    }
    if (p.hidden) continue;
    const box = el('div', { class: 'panel', style, 'data-panel': String(p.id), 'data-type': p.type },
      el('div', { class: 'panel-title' }, substitute(p.title || '', 60)),
      el('div', { class: 'panel-body' }));
    grid.append(box);
    jobs.push(renderPanel(p, box));
  }
  await Promise.all(jobs);
  document.body.dataset.state = 'ready';
}

// "now-6h" -> 21600.
function relative(from) {
  const m = /^now-(.+)$/.exec(from || '');
  return (m && parseDuration(m[1])) || 3600;
}

async function loadDashboard(uid) {
  document.body.dataset.state = 'loading';
  try {
    const j = await getJson('/api/v1/dashboards/' + encodeURIComponent(uid));
    dash.json = j.data;
    const url = new URLSearchParams(location.search);
    dash.range = parseDuration(url.get('range') || '') || relative((dash.json.time || {}).from);
    dash.end = url.get('end') || '';
    dash.refresh = Number(url.get('refresh') || 0) || 0;
    $('dash-title').textContent = dash.json.title || uid;
    const rsel = $('dash-range');
    if (![...rsel.options].some((o) => o.value === formatDuration(dash.range))) rsel.append(el('option', {}, formatDuration(dash.range)));
    rsel.value = formatDuration(dash.range);
    $('dash-refresh').value = String(dash.refresh);
    await loadVariables();
    writeDashUrl();
    await renderPanels();
    clearInterval(dash.timer);
    if (dash.refresh > 0) dash.timer = setInterval(renderPanels, dash.refresh * 1000);
  } catch (e) {
    $('dash-view-error').hidden = false;
    $('dash-view-error').textContent = e.message;
    document.body.dataset.state = 'error';
  }
}

async function loadList() {
  document.body.dataset.state = 'loading';
  try {
    const j = await getJson('/api/v1/dashboards');
    const tbody = $('dash-list').querySelector('tbody');
    tbody.textContent = '';
    for (const d of j.data) {
      tbody.append(el('tr', { 'data-uid': d.uid },
        el('td', {}, d.error ? d.title : el('a', { href: '/d/' + encodeURIComponent(d.uid) }, d.title)),
        el('td', {}, (d.tags || []).join(', ')),
        el('td', {}, d.source),
        el('td', { class: 'error-text' }, d.error || (d.warnings || []).map((w) => 'outside the subset: ' + w).join('\n'))));
    }
    document.body.dataset.state = 'ready';
  } catch (e) {
    $('dash-error').hidden = false;
    $('dash-error').textContent = e.message;
    document.body.dataset.state = 'error';
  }
}

if (PAGE === 'dashboards') loadList();
if (PAGE === 'dashboard') {
  const uid = decodeURIComponent(location.pathname.slice(3));
  // A range picked from the list ends now, as Grafana's relative ranges do.
  $('dash-range').addEventListener('change', () => setDashRange(parseDuration($('dash-range').value) || 3600, ''));
  $('dash-refresh').addEventListener('change', () => {
    dash.refresh = Number($('dash-refresh').value) || 0;
    writeDashUrl();
    clearInterval(dash.timer);
    if (dash.refresh > 0) dash.timer = setInterval(renderPanels, dash.refresh * 1000);
  });
  document.addEventListener('tidemark-token', () => loadDashboard(uid));
  loadDashboard(uid);
}
