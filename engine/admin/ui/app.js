// The Sagaflow dashboard: a page over the admin API, with no framework and nothing fetched
// from elsewhere. Every call sends the token the operator signed in with; the API decides what
// the role may do, and the page only hides what would be refused.
'use strict';

const TOKEN_KEY = 'sagaflow-token';
const ACTIONS = ['retry', 'skip', 'cancel', 'abort', 'pause', 'resume', 'resolve'];
const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, timer: null, jobDraft: null, renders: 0 };

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $('#main');

/** An element: el('td', {class: 'num'}, 'text', child…). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    // Through the CSSOM: the page's Content-Security-Policy forbids inline style attributes.
    else if (k === 'style') node.style.cssText = v;
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { status: 0, data: { error: `the admin API cannot be reached: ${e.message}` } };
  }
  let data;
  try { data = await res.json(); } catch { data = { error: `${res.status} ${res.statusText}` }; }
  if (res.status === 401 && state.me) {
    signOut(data.error);
    // The caller's page is gone: it must neither render over the sign-in form nor poll again.
    return new Promise(() => {});
  }
  return { status: res.status, data };
}

const when = (t) => (t ? new Date(t).toLocaleString() : '');
const badge = (status) => el('span', { class: `badge ${status || ''}`, 'data-status': status || '' }, status || '?');
const isOperator = () => state.me && state.me.role === 'operator';

function signOut(why) {
  clearTimeout(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  renderLogin(why);
}

function renderLogin(why) {
  $('#nav').hidden = true;
  $('#who').replaceChildren();
  const input = el('input', { type: 'password', id: 'token', autocomplete: 'off', placeholder: 'bearer token' });
  const error = el('p', { class: 'error', role: 'alert', id: 'login-error' }, why || '');
  const form = el('form', { class: 'login', onsubmit: async (e) => {
    e.preventDefault();
    state.token = input.value.trim();
    const { status, data } = await api('GET', '/api/whoami');
    if (status !== 200) { error.textContent = data.error || `sign-in failed (${status})`; return; }
    sessionStorage.setItem(TOKEN_KEY, state.token);
    state.me = data;
    route();
  } },
  el('h1', {}, 'Sign in'),
  el('p', { class: 'muted' }, 'A viewer or operator token from the admin API\'s auth file, or a JWT from your issuer.'),
  el('label', {}, 'Token', input), error,
  el('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in'));
  main().replaceChildren(form);
  input.focus();
}

function header() {
  $('#nav').hidden = false;
  $('#who').replaceChildren(
    el('span', { id: 'me' }, `${state.me.actor} (${state.me.role})`),
    el('button', { onclick: () => signOut() }, 'Sign out'));
  const page = (location.hash.split('/')[1] || 'sagas').split('?')[0];
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === page);
}

/** Re-renders the current page every `ms` while it stays the current page; waits while a
 * dialog is open or a form on the page holds what the user typed. */
function refreshEvery(ms, render) {
  const hash = location.hash;
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    if (location.hash !== hash) return;
    const busy = $('#confirm').open || main().querySelector('form[data-dirty]');
    if (busy) refreshEvery(ms, render); else render();
  }, ms);
}

/** Whether the user has gone elsewhere since `hash` was current: a page whose data came back
 * late must not render over (or schedule refreshes for) the page that replaced it. */
const leftSince = (hash) => location.hash !== hash;

/** Starts a page render; the function it returns says whether that render is outdated by the
 * time its data comes back: the user went elsewhere, or a newer render started. A refresh still
 * in flight when the operator acted would otherwise draw over the page that shows the action's
 * result, and keep refreshing without it. */
function startRender() {
  const hash = location.hash;
  const render = ++state.renders;
  return () => leftSince(hash) || state.renders !== render;
}

/** Marks a form as holding the user's input, which a refresh must not wipe. */
const keep = (e) => { e.currentTarget.dataset.dirty = '1'; };

async function route() {
  clearTimeout(state.timer);
  if (!state.token) return renderLogin();
  if (!state.me) {
    const hash = location.hash;
    const { status, data } = await api('GET', '/api/whoami');
    if (leftSince(hash)) return;
    if (status !== 200) return signOut(data.error);
    state.me = data;
  }
  header();
  const [, page, ...rest] = location.hash.split('/');
  const [name, query] = (page || 'sagas').split('?');
  if (name === 'saga') return sagaPage(decodeURIComponent(rest.join('/')));
  if (name === 'incidents') return listPage({ status: 'INCIDENT' }, true);
  if (name === 'jobs') return jobsPage();
  if (name === 'participants') return participantsPage();
  return listPage(Object.fromEntries(new URLSearchParams(query || '')), false);
}

// ---- saga list and incident queue -------------------------------------------------------------

const FILTERS = [['definition', 'Definition'], ['step', 'Step'], ['error_code', 'Error code'], ['key', 'Business key (NAME=VALUE)'], ['started_after', 'Started after (RFC 3339)'], ['started_before', 'Started before']];

async function listPage(filter, incidents) {
  const params = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
  const counts = new URLSearchParams([...params].filter(([k]) => k !== 'status'));
  const outdated = startRender();
  const [list, stats] = await Promise.all([
    api('GET', `/api/sagas?${params}&limit=100`),
    api('GET', `/api/stats/status?${counts}`),
  ]);
  if (outdated()) return;
  const title = incidents ? 'Incident queue' : 'Sagas';
  const body = [el('h1', {}, title)];
  if (!incidents) {
    const inputs = FILTERS.map(([k, label]) => el('label', {}, label, el('input', { name: k, value: filter[k] || '' })));
    body.push(el('form', { class: 'filters', oninput: keep, onchange: keep, onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams([...new FormData(e.target)].filter(([, v]) => v));
      if (filter.status) next.set('status', filter.status);
      location.hash = `#/sagas?${next}`;
    } }, inputs, el('button', { type: 'submit' }, 'Filter')));
    if (stats.status === 200) {
      const chip = (label, status, n) => el('button', { class: `chip ${filter.status === status ? 'on' : ''}`, 'data-count': status || 'ALL', onclick: () => {
        const next = new URLSearchParams(params);
        if (status) next.set('status', status); else next.delete('status');
        location.hash = `#/sagas?${next}`;
      } }, `${label} ${n}`);
      body.push(el('div', { class: 'chips', id: 'counts' }, chip('All', null, stats.data.total),
        Object.entries(stats.data.by_status).map(([s, n]) => chip(s, s, n))));
    }
  }
  if (list.status !== 200) {
    body.push(el('p', { class: 'error', role: 'alert' }, list.data.error));
  } else if (list.data.items.length === 0) {
    body.push(el('p', { class: 'muted', id: 'empty' }, incidents ? 'No open incidents.' : 'No saga matches.'));
  } else {
    const rows = list.data.items.map((s) => el('tr', { 'data-saga': s.saga_id },
      el('td', {}, el('a', { href: `#/saga/${encodeURIComponent(s.saga_id)}` }, s.saga_id)),
      el('td', {}, badge(s.status)),
      el('td', {}, `${s.definition} v${s.version}`),
      el('td', {}, s.current_step || ''),
      el('td', {}, s.last_error_code ? el('code', {}, s.last_error_code) : '', s.last_error_message ? el('div', { class: 'muted' }, s.last_error_message) : ''),
      el('td', {}, when(s.started_at))));
    body.push(el('table', { id: 'sagas' },
      el('thead', {}, el('tr', {}, ['Saga', 'Status', 'Definition', 'Step', 'Last error', 'Started'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
    if (list.data.next_cursor) body.push(el('p', { class: 'muted' }, 'Showing the 100 newest; narrow the filter to see others.'));
  }
  main().replaceChildren(...body);
  refreshEvery(5000, () => listPage(filter, incidents));
}

// ---- one saga ---------------------------------------------------------------------------------

/** Timers still pending: the latest event of a step (or the saga) that names a due time. */
function pendingTimers(timeline) {
  const latest = new Map();
  for (const e of timeline) latest.set(e.step || '(saga)', e);
  const now = Date.now();
  return [...latest.values()].filter((e) => e.due && new Date(e.due).getTime() > now);
}

async function sagaPage(id, result) {
  const outdated = startRender();
  const { status, data } = await api('GET', `/api/sagas/${encodeURIComponent(id)}`);
  if (outdated()) return;
  if (status !== 200) {
    main().replaceChildren(el('h1', {}, id), el('p', { class: 'error', role: 'alert' }, data.error));
    return refreshEvery(3000, () => sagaPage(id, result));
  }
  const { saga, steps, timeline } = data;
  const started = timeline.find((e) => e.type === 'SAGA_STARTED');
  const outputs = timeline.filter((e) => e.type === 'STEP_SUCCEEDED' && e.detail);
  const timers = pendingTimers(timeline);
  const actionButtons = ACTIONS.map((a) => el('button', {
    'data-action': a, class: a === 'abort' || a === 'cancel' ? 'danger' : '',
    disabled: !isOperator(), title: isOperator() ? undefined : 'needs the operator role',
    onclick: () => confirmAction(saga, a),
  }, a[0].toUpperCase() + a.slice(1)));
  const body = [
    el('h1', {}, 'Saga ', el('code', {}, saga.saga_id), ' ', badge(saga.status)),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Definition'), el('dd', {}, `${saga.definition} v${saga.version}`),
      el('dt', {}, 'Graph position'), el('dd', { id: 'position' }, saga.current_step || '(none)'),
      el('dt', {}, 'Last error'), el('dd', {}, saga.last_error_code ? `${saga.last_error_code}: ${saga.last_error_message || ''}` : '—'),
      el('dt', {}, 'Business keys'), el('dd', {}, el('code', {}, JSON.stringify(saga.business_keys || {}))),
      el('dt', {}, 'Started / ended'), el('dd', {}, `${when(saga.started_at)} / ${when(saga.ended_at) || '—'}`),
      el('dt', {}, 'Attempts, retries, timeouts, compensations'), el('dd', {}, `${saga.attempts}, ${saga.retries}, ${saga.timeouts}, ${saga.compensations}`)),
    el('div', { class: 'actions', id: 'actions' }, actionButtons),
  ];
  if (result) body.push(resultBox(result));
  body.push(
    el('h2', {}, 'Commands sent, with their attempts'),
    el('table', { id: 'steps' }, el('thead', {}, el('tr', {}, ['Step', 'Phase', 'Attempt', 'Status', 'Started', 'Duration', 'Error'].map((h) => el('th', {}, h)))),
      el('tbody', {}, steps.map((s) => el('tr', {}, el('td', {}, s.step), el('td', {}, s.phase), el('td', { class: 'num' }, s.attempt),
        el('td', {}, s.status), el('td', {}, when(s.started_at)), el('td', { class: 'num' }, s.duration_ms == null ? '' : `${s.duration_ms} ms`), el('td', {}, s.error_code || ''))))),
    el('div', { class: 'grid2' },
      el('div', {}, el('h2', {}, 'Current timers'), timers.length
        ? el('table', { id: 'timers' }, el('tbody', {}, timers.map((t) => el('tr', {}, el('td', {}, t.type), el('td', {}, t.step || ''), el('td', {}, `due ${when(t.due)}`)))))
        : el('p', { class: 'muted', id: 'timers' }, 'None pending.')),
      el('div', {}, el('h2', {}, 'Context'),
        el('p', { class: 'muted' }, 'What the saga started with, and what its steps returned (the read models keep the inputs and results, not the live context).'),
        el('pre', { id: 'context' }, JSON.stringify({ input: started && started.detail ? started.detail.input : null, results: Object.fromEntries(outputs.map((e) => [e.step, e.detail])) }, null, 2)))),
    el('h2', {}, 'Timeline'),
    el('table', { id: 'timeline' }, el('thead', {}, el('tr', {}, ['Seq', 'Event', 'Step', 'Attempt', 'At', 'Detail'].map((h) => el('th', {}, h)))),
      el('tbody', {}, timeline.map((e) => el('tr', { 'data-type': e.type }, el('td', { class: 'num' }, e.seq), el('td', {}, e.type), el('td', {}, e.step || ''),
        el('td', { class: 'num' }, e.attempt ?? ''), el('td', {}, when(e.at)), el('td', {}, e.detail ? el('code', {}, JSON.stringify(e.detail)) : ''))))));
  main().replaceChildren(...body);
  refreshEvery(2000, () => sagaPage(id, result));
}

function resultBox(result) {
  const applied = result.status === 200;
  return el('div', { class: `result ${applied ? '' : 'rejected'}`, id: 'result', role: 'status' },
    el('strong', {}, applied ? `Applied: ${result.data.action}` : `Not applied (${result.status})`),
    result.data.error ? el('div', { class: 'error' }, result.data.error) : null,
    (result.data.events || []).length ? el('ul', {}, result.data.events.map((e) => el('li', { 'data-event': e.type },
      `${e.type}${e.step ? ` ${e.step}` : ''}${e.attempt ? ` attempt ${e.attempt}` : ''} (event ${e.seq}${e.detail && e.detail.actor ? `, by ${e.detail.actor}` : ''})`))) : null);
}

/** Asks for what the action needs and a confirmation; sends it; shows the resulting events. */
function confirmAction(saga, action) {
  const dialog = $('#confirm');
  const fields = [el('label', {}, action === 'abort' ? 'Reason (required)' : 'Reason (recorded on the event log)', el('input', { name: 'reason', required: action === 'abort' }))];
  if (['retry', 'skip', 'resolve'].includes(action)) fields.push(el('label', {}, action === 'skip' ? 'Step (required)' : 'Step (optional)', el('input', { name: 'step', required: action === 'skip', value: action === 'skip' ? saga.current_step || '' : '' })));
  if (action === 'resolve') fields.push(el('label', {}, 'Resolution', el('select', { name: 'resolution' }, el('option', { value: 'retry_compensation' }, 'retry the compensation'), el('option', { value: 'mark_done' }, 'mark it done by hand'))));
  if (action === 'skip' || action === 'resolve') fields.push(el('label', {}, 'Step output (JSON object)', el('textarea', { name: 'step_output', placeholder: '{}' })));
  $('#confirm-title').textContent = `${action[0].toUpperCase()}${action.slice(1)} saga ${saga.saga_id}?`;
  $('#confirm-text').textContent = `It is ${saga.status}${saga.current_step ? ` at ${saga.current_step}` : ''}. The command is recorded on its event log as yours (${state.me.actor}).`;
  $('#confirm-fields').replaceChildren(...fields);
  $('#confirm-error').textContent = '';
  $('#confirm-ok').textContent = `Send ${action}`;
  $('#confirm-cancel').onclick = () => dialog.close();
  $('#confirm-form').onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const body = { action };
    for (const k of ['reason', 'step', 'resolution']) if (form.get(k)) body[k] = form.get(k);
    if (form.get('step_output')) {
      try { body.step_output = JSON.parse(form.get('step_output')); } catch (err) { $('#confirm-error').textContent = `The step output is not JSON: ${err.message}`; return; }
    }
    $('#confirm-ok').disabled = true;
    const result = await api('POST', `/api/sagas/${encodeURIComponent(saga.saga_id)}/commands`, body);
    $('#confirm-ok').disabled = false;
    dialog.close();
    sagaPage(saga.saga_id, result);
  };
  dialog.showModal();
}

// ---- bulk jobs --------------------------------------------------------------------------------

async function jobsPage(result) {
  const outdated = startRender();
  const { status, data } = await api('GET', '/api/jobs');
  if (outdated()) return;
  const body = [el('h1', {}, 'Bulk jobs')];
  if (isOperator()) body.push(jobForm());
  if (result) body.push(el('div', { class: `result ${result.status < 300 ? '' : 'rejected'}`, id: 'job-result' },
    result.status >= 300 ? result.data.error : result.data.dry_run ? `Dry run: ${result.data.matched} sagas match.` : `Started ${result.data.job_id} on ${result.data.matched} sagas.`));
  if (status !== 200) body.push(el('p', { class: 'error' }, data.error));
  else if (!data.items.length) body.push(el('p', { class: 'muted' }, 'No job has run on this service since it started.'));
  else body.push(el('table', { id: 'jobs' }, el('thead', {}, el('tr', {}, ['Job', 'Action', 'Filter', 'By', 'Status', 'Progress', 'Counts', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, data.items.map((j) => el('tr', { 'data-job': j.job_id },
      el('td', {}, el('code', {}, j.job_id)), el('td', {}, j.action), el('td', {}, el('code', {}, new URLSearchParams(j.filter).toString())), el('td', {}, j.actor),
      el('td', {}, j.status), el('td', {}, el('span', { class: 'bar' }, el('span', { style: `width:${j.matched ? (100 * j.done) / j.matched : 100}%` })), ` ${j.done}/${j.matched} done, ${j.failed} failed, ${j.remaining} remaining`),
      el('td', {}, Object.entries(j.counts).map(([k, v]) => `${v} ${k}`).join(', ')),
      el('td', {}, j.status === 'running' && isOperator() ? el('button', { onclick: async () => {
        if (!confirm(`Cancel ${j.job_id}? It stops sending; what was sent is still answered.`)) return;
        jobsPage(await api('POST', `/api/jobs/${j.job_id}/cancel`));
      } }, 'Cancel') : ''))))));
  main().replaceChildren(...body);
  refreshEvery(2000, () => jobsPage(result));
}

const JOB_DEFAULTS = { action: 'retry', status: 'INCIDENT', definition: '', step: '', error_code: '', reason: '', rate: '50' };

/** The job form, filled with what the operator last typed (kept across refreshes and dry runs). */
function jobForm() {
  const draft = state.jobDraft || JOB_DEFAULTS;
  const remember = (e) => { keep(e); state.jobDraft = Object.fromEntries(new FormData(e.currentTarget)); };
  const form = el('form', { class: 'filters', id: 'job-form', oninput: remember, onchange: remember },
    el('label', {}, 'Action', el('select', { name: 'action' }, ACTIONS.map((a) => el('option', { value: a, selected: a === draft.action }, a)))),
    el('label', {}, 'Status', el('input', { name: 'status', value: draft.status })),
    FILTERS.slice(0, 3).map(([k, label]) => el('label', {}, label, el('input', { name: k, value: draft[k] }))),
    el('label', {}, 'Reason', el('input', { name: 'reason', value: draft.reason })),
    el('label', {}, 'Rate/s', el('input', { name: 'rate', type: 'number', value: draft.rate, min: '0.01', step: 'any' })));
  const send = async (dryRun) => {
    const f = new FormData(form);
    const filter = {};
    for (const k of ['status', 'definition', 'step', 'error_code']) if (f.get(k)) filter[k] = f.get(k);
    const body = { action: f.get('action'), filter, rate: Number(f.get('rate')) || 50, dry_run: dryRun };
    if (f.get('reason')) body.reason = f.get('reason');
    if (!dryRun) {
      const dry = await api('POST', '/api/jobs', { ...body, dry_run: true });
      if (dry.status !== 200) return jobsPage(dry);
      if (!confirm(`${body.action} ${dry.data.matched} sagas at ${body.rate}/s?`)) return;
    }
    const result = await api('POST', '/api/jobs', body);
    if (result.status === 202) state.jobDraft = null;
    jobsPage(result);
  };
  form.append(el('button', { type: 'button', onclick: () => send(true) }, 'Dry run'), el('button', { type: 'button', class: 'primary', onclick: () => send(false) }, 'Start job'));
  return form;
}

// ---- participants -----------------------------------------------------------------------------

/** Command topics: paused or dispatching, by whom, their consumers' lag; pause and resume. */
async function participantsPage(result) {
  const outdated = startRender();
  const { status, data } = await api('GET', '/api/participants');
  if (outdated()) return;
  const body = [el('h1', {}, 'Participants'),
    el('p', { class: 'muted' }, 'While a participant is paused, the engines hold the commands sagas send it (their attempt timeouts stop) and send them in order on resume.')];
  if (result) body.push(el('div', { class: `result ${result.status === 200 ? '' : 'rejected'}`, id: 'participant-result', role: 'status' },
    result.status === 200 ? `${result.data.paused ? 'Paused' : 'Resumed'} ${result.data.topic} (request ${result.data.request_id}, by ${result.data.actor}; limits: ${limitsText(result.data)})` : result.data.error));
  if (status !== 200) body.push(el('p', { class: 'error' }, data.error));
  else if (!data.items.length) body.push(el('p', { class: 'muted' }, 'No participant was ever paused or limited: start the admin API with --definitions to list every command topic.'));
  else body.push(el('table', { id: 'participants' }, el('thead', {}, el('tr', {}, ['Command topic', 'Dispatch', 'Limits', 'Since', 'By', 'Reason', 'Consumer lag', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, data.items.map((p) => el('tr', { 'data-topic': p.topic, 'data-paused': String(p.paused) },
      el('td', {}, el('code', {}, p.topic)),
      el('td', {}, badge(p.paused ? 'PAUSED' : 'DISPATCHING')),
      el('td', { class: 'limits' }, limitsText(p.control)),
      el('td', {}, p.control ? when(p.control.at) : ''),
      el('td', {}, p.control ? p.control.actor : ''),
      el('td', {}, (p.control && p.control.reason) || ''),
      el('td', {}, p.lag === null ? 'unknown' : Object.entries(p.lag).map(([g, n]) => `${g}: ${n}`).join(', ') || 'no committed offsets'),
      el('td', {}, isOperator() ? el('button', { 'data-action': p.paused ? 'resume' : 'pause', onclick: () => confirmParticipant(p) }, p.paused ? 'Resume' : 'Pause') : ''))))));
  main().replaceChildren(...body);
  refreshEvery(3000, () => participantsPage(result));
}

/** "at most 20 in flight, 50/s", or "none". */
function limitsText(c) {
  const parts = [];
  if (c && c.max_in_flight !== null) parts.push(`${c.max_in_flight} in flight`);
  if (c && c.max_rate !== null) parts.push(`${c.max_rate}/s`);
  return parts.length ? `at most ${parts.join(', ')}` : 'none';
}

function confirmParticipant(p) {
  const action = p.paused ? 'resume' : 'pause';
  const dialog = $('#confirm');
  $('#confirm-title').textContent = `${p.paused ? 'Resume' : 'Pause'} ${p.topic}?`;
  $('#confirm-text').textContent = p.paused
    ? 'The held commands are sent in the order they were held. Recorded on the audit topic as yours.'
    : `Commands to ${p.topic} are held until it is resumed; other participants are not affected. Recorded on the audit topic as yours (${state.me.actor}).`;
  $('#confirm-fields').replaceChildren(el('label', {}, 'Reason', el('input', { name: 'reason' })));
  $('#confirm-error').textContent = '';
  $('#confirm-ok').textContent = p.paused ? 'Resume' : 'Pause';
  $('#confirm-cancel').onclick = () => dialog.close();
  $('#confirm-form').onsubmit = async (e) => {
    e.preventDefault();
    const reason = new FormData(e.target).get('reason');
    $('#confirm-ok').disabled = true;
    const result = await api('POST', `/api/participants/${encodeURIComponent(p.topic)}/${action}`, reason ? { reason } : {});
    $('#confirm-ok').disabled = false;
    dialog.close();
    participantsPage(result);
  };
  dialog.showModal();
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', route);
