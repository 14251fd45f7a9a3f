// The dashboard end to end, in Debian's Chromium driven by playwright-core, against a real
// stack that tests/tests/admin.rs starts: broker, registry, engine, a participant whose
// compensation failed, the read models and the admin API. Run by scripts/dashboard-test.sh.
//
//   SAGAFLOW_UI_URL             the admin API, e.g. http://127.0.0.1:41234
//   SAGAFLOW_UI_OPERATOR_TOKEN  an operator's token
//   SAGAFLOW_UI_VIEWER_TOKEN    a viewer's token
//   SAGAFLOW_UI_SAGA            a saga in INCIDENT whose compensation can now succeed
//   SAGAFLOW_UI_PARTICIPANT     a participant's command topic, paused and resumed from the page
//   SAGAFLOW_UI_SCREENSHOTS     where to write screenshots
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run this through tests/tests/admin.rs`);
  return value;
};
const url = env('SAGAFLOW_UI_URL');
const saga = env('SAGAFLOW_UI_SAGA');
const shots = env('SAGAFLOW_UI_SCREENSHOTS');
// The read models lag the event log, and the page refreshes every 2 s.
const SLOW = 60_000;

let browser;
before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    // As root, without a sandbox; and no calls home, which this machine's network refuses.
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
});
after(async () => { await browser?.close(); });

/** A page signed in with `token`; fails the test on any request to another origin. */
async function signedIn(token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const origin = new URL(url).origin;
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(origin)) foreign.push(r.url()); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.fill('#token', token);
  await page.click('#sign-in');
  await page.waitForSelector('#me');
  return { page, context, foreign, errors };
}

test('a bad token is refused on the sign-in page with the reason', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url);
  await page.fill('#token', 'not-a-token');
  await page.click('#sign-in');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent !== '');
  assert.match(await page.textContent('#login-error'), /unknown token/);
  assert.equal(await page.locator('#me').count(), 0, 'not signed in');
  await context.close();
});

test('a compensation that failed for good is in the incident queue, and a viewer cannot act on it', async () => {
  const { page, context, foreign, errors } = await signedIn(env('SAGAFLOW_UI_VIEWER_TOKEN'));
  assert.match(await page.textContent('#me'), /\(viewer\)/);
  await page.click('[data-nav=incidents]');
  const row = page.locator(`tr[data-saga="${saga}"]`);
  await row.waitFor({ timeout: SLOW });
  assert.equal(await row.locator('.badge').textContent(), 'INCIDENT');
  await page.screenshot({ path: path.join(shots, 'incidents.png'), fullPage: true });
  await row.locator('a').click();
  await page.waitForSelector('#actions');
  assert.equal(await page.isDisabled('[data-action=retry]'), true, 'a viewer\'s actions are disabled');
  assert.match(await page.getAttribute('[data-action=retry]', 'title'), /operator role/);
  assert.ok(await page.locator('#timeline tr[data-type=SAGA_INCIDENT]').count() >= 1, 'the timeline shows the incident');
  assert.deepEqual(foreign, [], 'the page loads nothing from elsewhere');
  assert.deepEqual(errors, []);
  await context.close();
});

test('an operator retries the incident from the page; the saga completes its compensation and the page shows the audit event', async () => {
  const { page, context, foreign, errors } = await signedIn(env('SAGAFLOW_UI_OPERATOR_TOKEN'));
  await page.goto(`${url}/#/saga/${encodeURIComponent(saga)}`);
  await page.waitForSelector('h1 .badge[data-status=INCIDENT]', { timeout: SLOW });
  // The page's next refresh is held until the retry's result is on the page: its data, older
  // than the result, must not draw over it (on a loaded machine a slow refresh did).
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let caught;
  const refreshing = new Promise((resolve) => { caught = resolve; });
  const sagaPath = `/api/sagas/${encodeURIComponent(saga)}`;
  const sagaUrl = (u) => u.pathname === sagaPath;
  await page.route(sagaUrl, async (route) => {
    if (route.request().method() === 'GET' && caught) {
      const request = route.request();
      caught(request);
      caught = null;
      await held;
    }
    await route.continue();
  });
  const staleRequest = await refreshing;
  await page.click('[data-action=retry]');
  // The confirmation names the saga and who acts; nothing is sent before it is confirmed.
  assert.match(await page.textContent('#confirm-title'), new RegExp(`Retry saga ${saga}`));
  await page.fill('#confirm [name=reason]', 'participant fixed, from the dashboard');
  await page.click('#confirm-ok');
  const result = page.locator('#result');
  await result.waitFor({ timeout: SLOW });
  const staleAnswered = page.waitForResponse((r) => r.request() === staleRequest, { timeout: SLOW });
  release();
  await staleAnswered;
  // Past the page's handling of that response, which is not awaited anywhere else.
  await page.waitForTimeout(500);
  assert.equal(await result.count(), 1, 'an older refresh drew over the result');
  await page.unroute(sagaUrl);
  assert.match(await result.textContent(), /Applied: retry/);
  const applied = result.locator('li[data-event=ADMIN_COMMAND_APPLIED]');
  assert.match(await applied.textContent(), /by /, 'the resulting event names the actor');
  assert.ok(await result.locator('li[data-event=COMPENSATION_DISPATCHED]').count() === 1, 'and what the retry did');
  await page.waitForSelector('h1 .badge[data-status=COMPENSATED]', { timeout: SLOW });
  const audit = page.locator('#timeline tr[data-type=ADMIN_COMMAND_APPLIED]');
  await audit.waitFor({ timeout: SLOW });
  assert.match(await audit.textContent(), /participant fixed, from the dashboard/);
  await page.screenshot({ path: path.join(shots, 'saga.png'), fullPage: true });
  // The saga list counts it among the compensated.
  await page.click('[data-nav=sagas]');
  await page.waitForSelector('#counts [data-count=COMPENSATED]', { timeout: SLOW });
  await page.screenshot({ path: path.join(shots, 'sagas.png'), fullPage: true });
  // The bulk jobs page: a dry run from its form counts the incidents left, and sends nothing.
  await page.click('[data-nav=jobs]');
  await page.waitForSelector('#job-form');
  await page.click('#job-form button:has-text("Dry run")');
  await page.waitForSelector('#job-result');
  assert.match(await page.textContent('#job-result'), /Dry run: [1-9][0-9]* sagas match\./);
  await page.screenshot({ path: path.join(shots, 'jobs.png'), fullPage: true });
  assert.deepEqual(foreign, []);
  assert.deepEqual(errors, []);
  await context.close();
});

test('an operator pauses a participant from the participants page, then resumes it', async () => {
  const topic = env('SAGAFLOW_UI_PARTICIPANT');
  const { page, context, foreign, errors } = await signedIn(env('SAGAFLOW_UI_OPERATOR_TOKEN'));
  await page.click('[data-nav=participants]');
  const row = page.locator(`tr[data-topic="${topic}"]`);
  await row.waitFor({ timeout: SLOW });
  assert.equal(await row.getAttribute('data-paused'), 'false');
  assert.equal(await row.locator('.badge').textContent(), 'DISPATCHING');
  await row.locator('[data-action=pause]').click();
  assert.match(await page.textContent('#confirm-title'), new RegExp(`Pause ${topic.replace(/\./g, '\\.')}`));
  await page.fill('#confirm [name=reason]', 'hotel database migration');
  await page.click('#confirm-ok');
  await page.waitForSelector('#participant-result', { timeout: SLOW });
  assert.match(await page.textContent('#participant-result'), new RegExp(`Paused ${topic.replace(/\./g, '\\.')} \\(request ctl-`));
  const paused = page.locator(`tr[data-topic="${topic}"][data-paused=true]`);
  await paused.waitFor({ timeout: SLOW });
  assert.equal(await paused.locator('.badge').textContent(), 'PAUSED');
  assert.match(await paused.textContent(), /hotel database migration/);
  await page.screenshot({ path: path.join(shots, 'participants.png'), fullPage: true });
  await paused.locator('[data-action=resume]').click();
  await page.click('#confirm-ok');
  await page.locator(`tr[data-topic="${topic}"][data-paused=false]`).waitFor({ timeout: SLOW });
  assert.match(await page.textContent('#participant-result'), /Resumed /);
  assert.deepEqual(foreign, []);
  assert.deepEqual(errors, []);
  await context.close();
});
