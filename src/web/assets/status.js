// Tidemark's targets view (`/targets`: /api/v1/targets by scrape pool) and status view
// (`/status`: build info, and the process's own figures read from /metrics: ingest rate,
// watermark and its delay, log, checkpoints, hot index, memory by component, tiers, queries;
// /api/v1/status/tsdb's metrics with the most series; a worker's processes and jobs from
// /api/v1/status/cluster and /api/v1/jobs; the flags and the configuration in effect from
// /api/v1/status/flags and /api/v1/status/config).
// Uses app.js's and alerts.js's helpers ($, el, getJson, since, chips, authHeaders).
'use strict';

function setError(id, msg) {
  const e = $(id);
  e.hidden = !msg;
  e.textContent = msg || '';
}

// ---- targets -------------------------------------------------------------------------------

async function loadTargets() {
  document.body.dataset.state = 'loading';
  try {
    const j = await getJson('/api/v1/targets?state=active');
    const box = $('targets');
    box.textContent = '';
    const pools = new Map();
    for (const t of j.data.activeTargets || []) {
      if (!pools.has(t.scrapePool)) pools.set(t.scrapePool, []);
      pools.get(t.scrapePool).push(t);
    }
    for (const [pool, targets] of [...pools.entries()].sort()) {
      const up = targets.filter((t) => t.health === 'up').length;
      const rows = targets.map((t) => el('tr', { 'data-health': t.health },
        el('td', {}, el('a', { href: t.scrapeUrl }, t.scrapeUrl)),
        el('td', {}, el('span', { class: 'badge ' + t.health }, t.health)),
        el('td', {}, ...chips(t.labels)),
        el('td', {}, t.lastScrape && !t.lastScrape.startsWith('0001') ? since(t.lastScrape) : 'never'),
        el('td', {}, t.lastScrapeDuration ? (t.lastScrapeDuration * 1000).toFixed(1) + ' ms' : ''),
        el('td', { class: 'error-text' }, t.lastError || '')));
      box.append(el('section', { class: 'pool', 'data-pool': pool },
        el('h3', {}, `${pool} (${up}/${targets.length} up)`),
        el('table', {},
          el('thead', {}, el('tr', {}, ...['Endpoint', 'State', 'Labels', 'Last scrape', 'Duration', 'Error'].map((h) => el('th', {}, h)))),
          el('tbody', {}, ...rows))));
    }
    if (!pools.size) box.append(el('p', { class: 'note' }, 'There are no scrape targets ([scrape] in tidemark.toml).'));
    $('targets-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    setError('targets-error', '');
    document.body.dataset.targets = String((j.data.activeTargets || []).length);
    document.body.dataset.state = 'ready';
  } catch (e) {
    setError('targets-error', e.message);
    document.body.dataset.state = 'error';
  }
}

// ---- status --------------------------------------------------------------------------------

// Prometheus text format -> Map(name -> [{labels, value}]).
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const p of (m[2] || '').slice(1, -1).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function total(metrics, name, filter) {
  return (metrics.get(name) || []).filter((s) => !filter || Object.entries(filter).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function num(n) {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: 2 }) : '-';
}

function card(title, pairs) {
  return el('div', { class: 'card', 'data-card': title },
    el('h4', {}, title),
    el('dl', {}, ...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-key': k }, String(v))])));
}

let previous = null;

async function loadStatus() {
  document.body.dataset.state = 'loading';
  try {
    const [build, tsdb, text, runtime, flags, config] = await Promise.all([
      getJson('/api/v1/status/buildinfo'),
      getJson('/api/v1/status/tsdb').catch(() => null),
      fetch('/metrics', { headers: authHeaders() }).then((r) => {
        if (!r.ok) throw new Error(`/metrics: HTTP ${r.status}`);
        return r.text();
      }),
      getJson('/api/v1/status/runtimeinfo').catch(() => null),
      getJson('/api/v1/status/flags').catch(() => null),
      getJson('/api/v1/status/config').catch(() => null),
    ]);
    // A worker process: the cluster's processes, then its jobs (which need every process, and
    // wait for one that hangs), each shown as it comes.
    const worker = runtime && runtime.data.role === 'worker';
    const cluster = worker ? await getJson('/api/v1/status/cluster').catch(() => null) : null;
    showProcesses(cluster);
    if (cluster) {
      getJson('/api/v1/jobs').catch((e) => ({ error: e.message })).then(showJobs);
    }
    const m = parseMetrics(text);
    const now = Date.now() / 1000;
    const ingested = total(m, 'tidemark_samples_ingested_total');
    const rate = previous && now > previous.at ? (ingested - previous.ingested) / (now - previous.at) : null;
    previous = { at: now, ingested };
    const watermark = total(m, 'tidemark_watermark_seconds');
    const ckptAt = total(m, 'tidemark_checkpoint_last_timestamp_seconds');
    const memory = (m.get('tidemark_memory_bytes') || []).slice().sort((a, b) => b.value - a.value);
    const cards = [
      card('Build', [
        ['version', build.data.version],
        ['revision', build.data.revision || '-'],
        ['process', runtime ? runtime.data.role + ' (pid ' + runtime.data.pid + ')' : '-'],
        ['started', runtime ? new Date(runtime.data.startTime).toLocaleString() : '-'],
        ['worker threads', runtime ? runtime.data.workers : '-'],
        ['hot retention', runtime ? runtime.data.storageRetention : '-'],
      ]),
      card('Ingest', [
        ['samples/s', rate === null ? 'next refresh' : num(rate)],
        ['samples ingested', num(ingested)],
        ['samples rejected', num(total(m, 'tidemark_samples_rejected_total'))],
        ['late samples', num(total(m, 'tidemark_late_samples_total'))],
      ]),
      card('Watermark', [
        ['watermark', watermark ? new Date(watermark * 1000).toLocaleString() : 'none yet'],
        ['delay', num(total(m, 'tidemark_watermark_delay_seconds')) + ' s'],
      ]),
      card('Log and checkpoints', [
        ['log end offset', num(total(m, 'tidemark_log_end_offset'))],
        ['job offset', num(total(m, 'tidemark_log_consumer_offset'))],
        ['log on disk', `${bytes(total(m, 'tidemark_log_bytes'))} in ${num(total(m, 'tidemark_log_segments'))} segments`],
        ['log bytes appended', bytes(total(m, 'tidemark_log_appended_bytes_total'))],
        ['last checkpoint', ckptAt ? new Date(ckptAt * 1000).toLocaleString() : 'none yet'],
        ['checkpoint size', bytes(total(m, 'tidemark_checkpoint_last_bytes'))],
      ]),
      card('Hot index', [
        ['series', num(total(m, 'tidemark_hot_series'))],
        ['samples', num(total(m, 'tidemark_hot_samples'))],
        ['bytes', bytes(total(m, 'tidemark_hot_bytes'))],
        ['chunk files', bytes(total(m, 'tidemark_hot_chunk_files_bytes'))],
        ['resident memory', bytes(total(m, 'process_resident_memory_bytes'))],
      ]),
      card('Memory by component', memory.map((s) => [s.labels.component || '?', bytes(s.value)])),
      card('Cold tiers', [
        ...['raw', '1m', '1h'].map((tier) => [tier + ' tier', m.has('tidemark_cold_partitions')
          ? `${num(total(m, 'tidemark_cold_partitions', { tier }))} partitions, ${num(total(m, 'tidemark_cold_files', { tier }))} files, ${bytes(total(m, 'tidemark_cold_stored_bytes', { tier }))}`
          : 'not listed yet']),
        ['files written', num(total(m, 'tidemark_cold_files_written_total'))],
        ['bytes written', bytes(total(m, 'tidemark_cold_bytes_written_total'))],
        ['rows written', num(total(m, 'tidemark_cold_rows_written_total'))],
        ['write failures', num(total(m, 'tidemark_cold_write_failures_total'))],
        ['rows read by queries', num(total(m, 'tidemark_cold_query_rows_total'))],
      ]),
      card('Queries and rules', [
        ['queries', num(total(m, 'tidemark_queries_total'))],
        ['running', num(total(m, 'tidemark_queries_running'))],
        ['cache hits', num(total(m, 'tidemark_query_cache_requests_total', { result: 'hit' }))],
        ['cache bytes', bytes(total(m, 'tidemark_query_cache_bytes'))],
        ['rule evaluations', num(total(m, 'tidemark_rule_evaluations_total'))],
        ['rule failures', num(total(m, 'tidemark_rule_evaluation_failures_total'))],
      ]),
    ];
    const box = $('status');
    box.textContent = '';
    box.append(...cards);

    const top = tsdb ? tsdb.data.seriesCountByMetricName || [] : [];
    const tbody = $('top-metrics').querySelector('tbody');
    tbody.textContent = '';
    for (const r of top) {
      tbody.append(el('tr', {},
        el('td', {}, el('a', { href: '/?expr=' + encodeURIComponent(r.name) + '&range=1h' }, r.name)),
        el('td', {}, num(r.value))));
    }

    const ftbody = $('flags').querySelector('tbody');
    ftbody.textContent = '';
    const fl = flags ? Object.entries(flags.data) : [];
    for (const [k, v] of fl.sort()) ftbody.append(el('tr', { 'data-flag': k }, el('td', {}, '--' + k), el('td', {}, v)));
    if (!fl.length) ftbody.append(el('tr', {}, el('td', { colspan: 2, class: 'note' }, 'none recorded')));
    $('config').textContent = config ? config.data.toml : 'not available';
    $('config-file').textContent = config && config.data.file ? `(${config.data.file}, with every default)` : '(the embedded defaults)';

    $('status-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    setError('status-error', '');
    document.body.dataset.state = 'ready';
  } catch (e) {
    setError('status-error', e.message);
    document.body.dataset.state = 'error';
  }
}

// A worker process's cluster: each process's readiness.
function showProcesses(cluster) {
  $('cluster').hidden = !cluster;
  if (!cluster) return;
  const ptbody = $('cluster-processes').querySelector('tbody');
  ptbody.textContent = '';
  for (const p of cluster.data.processes) {
    const state = p.ready ? 'ready' : 'not ready';
    ptbody.append(el('tr', { 'data-process': p.process, 'data-ready': String(p.ready) },
      el('td', {}, String(p.process) + (p.self ? ' (this one)' : '')),
      el('td', {}, p.url ? el('a', { href: p.url + '/status' }, p.url) : location.host),
      el('td', {}, el('span', { class: 'badge ' + (p.ready ? 'up' : 'down') }, state)),
      el('td', { class: 'error-text' }, p.error || '')));
  }
}

// The jobs across the cluster's processes (or why they cannot be listed).
function showJobs(jobs) {
  const jtbody = $('cluster-jobs').querySelector('tbody');
  jtbody.textContent = '';
  if (jobs && jobs.error) {
    jtbody.append(el('tr', {}, el('td', { colspan: 8, class: 'error-text' }, jobs.error)));
    return;
  }
  const list = jobs ? jobs.data : [];
  for (const j of list) {
    jtbody.append(el('tr', { 'data-job': j.name, 'data-state': j.state },
      el('td', {}, j.name),
      el('td', {}, j.state),
      el('td', {}, String(j.epoch)),
      el('td', {}, j.watermark ? new Date(j.watermark).toLocaleString() : 'none yet'),
      el('td', {}, j.lag === null || j.lag === undefined ? '-' : num(j.lag)),
      el('td', {}, num(j.samples)),
      el('td', {}, `${num(j.late_accepted)} / ${num(j.late_dropped)}`),
      el('td', { class: 'error-text' }, (j.problems || []).join('; '))));
  }
  if (!list.length) jtbody.append(el('tr', {}, el('td', { colspan: 8, class: 'note' }, 'No jobs: submit one with tidemark submit.')));
}

if (PAGE === 'targets') {
  document.addEventListener('tidemark-token', loadTargets);
  loadTargets();
  setInterval(loadTargets, 10000);
}
if (PAGE === 'status') {
  document.addEventListener('tidemark-token', loadStatus);
  loadStatus();
  setInterval(loadStatus, 5000);
}
