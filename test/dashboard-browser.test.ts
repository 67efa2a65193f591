/**
 * The dashboard page in a real browser: headless Chromium (Debian's `chromium`
 * package, installed by scripts/setup.sh) driven by playwright-core, against a
 * real stowage server in this process with its HTTP listener on a free port,
 * and a real `stowage worker`. What the page shows is checked against what the
 * test made: a volume of two commits, a queue it puts into, a call it runs with
 * `stowage run`. Screenshots of each view go to test-output/screenshots/ for a
 * reviewer (docs/dashboard.png is a copy of the volumes one). Needs
 * `npm run build` first (the page bundle in dist/dashboard/, and the CLI the
 * worker runs). Without the browser every test fails, saying so: never skipped.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BridgeAdmin, Dict, Queue, Volume } from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, startWorker, type WorkerProcess } from './support/bridge.js';
import { ROOT, runCli, startStowage, uniqueName, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(ROOT, 'test-output', 'screenshots');
const MiB = 1024 * KiB;
/** How long the page may take to show a change: a poll every 2 s, with room for a loaded machine. */
const SHOWN_WITHIN = { timeout: 15_000, interval: 200 };
/** Without the browser every test fails with this, from a beforeEach (a failing beforeAll would only mark them skipped). */
const BROWSER_MISSING = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is missing: the dashboard browser test needs Debian's chromium package (scripts/setup.sh installs it)`;
const failWithoutBrowser = () => {
  if (BROWSER_MISSING) throw new Error(BROWSER_MISSING);
};
const launchBrowser = () => chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new'] });

describe('dashboard in headless Chromium (real server, worker and calls)', () => {
  let stowage: Stowage;
  let worker: WorkerProcess | undefined;
  let browser: Browser | undefined;
  let base: string;
  let env: Record<string, string>;
  const volume = uniqueName('dash-vol');
  const queue = uniqueName('dash-queue');
  const dict = uniqueName('dash-dict');
  const workerId = uniqueName('dash-w');
  const readme = Buffer.from('hello from the dashboard test\n');
  /** Bytes of the latest version's files: shards a.bin, b.bin, c.bin and README.txt. */
  const latestBytes = 1 * MiB + 256 * KiB + 256 * KiB + readme.length;

  beforeEach(failWithoutBrowser);
  beforeAll(async () => {
    if (BROWSER_MISSING) return;
    mkdirSync(SHOTS, { recursive: true });
    // Rates sampled every 500 ms (not 5 s): the screenshots' charts have points sooner (where the server counts operations).
    stowage = await startStowage({ http: { host: '127.0.0.1', port: 0, sampleEveryMs: 500 } });
    const { address, token } = stowage.server;
    base = `http://${stowage.server.httpAddress}`;
    env = { STOWAGE_SERVER: address, STOWAGE_TOKEN: token, STOWAGE_LOG_LEVEL: 'warn' };
    browser = await launchBrowser();

    // A volume of two versions: the second adds a file and a README, and keeps the first's files.
    const vol = await Volume.fromName(volume, { connection: stowage.connection, createIfMissing: true, chunkSize: 64 * KiB });
    await vol.batchUpload().putFile(randomBytes(1 * MiB), '/shards/a.bin').putFile(randomBytes(256 * KiB), '/shards/b.bin').commit();
    await vol.batchUpload().putFile(randomBytes(256 * KiB), '/shards/c.bin').putFile(readme, '/README.txt').commit();
    worker = await startWorker({ id: workerId, server: address, token, slots: 2 });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await worker?.kill();
    cleanUpWorkers();
    await stowage?.stop();
  });

  /** A fresh tab (its own sessionStorage) that has submitted `token` on the login form; `watch` sees the page first. */
  async function openPage(token: string, watch: (page: Page) => void = () => undefined): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser!.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    watch(page);
    await page.goto(`${base}/`);
    await page.getByTestId('token-input').fill(token);
    await page.getByTestId('login-submit').click();
    return { context, page };
  }

  async function loggedIn(): Promise<{ context: BrowserContext; page: Page }> {
    const opened = await openPage(stowage.server.token);
    await opened.page.getByTestId('logout').waitFor();
    return opened;
  }

  /** Waits until the view has its first answer, then writes its screenshot. */
  async function screenshot(page: Page, name: string): Promise<void> {
    await page.getByTestId('freshness').filter({ hasText: 'updated' }).waitFor();
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  }

  it('answers the API only with a valid token; the login page and its assets without one', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token' }] as Record<string, string>[]) {
      for (const path of ['/api/volumes', '/api/whoami', '/api/bridge']) {
        const res = await fetch(`${base}${path}`, { headers });
        expect(res.status, `${path} with ${JSON.stringify(headers)}`).toBe(401);
        const body = (await res.json()) as Record<string, unknown>;
        expect(Object.keys(body)).toEqual(['error']);
      }
    }
    const html = await fetch(`${base}/`);
    expect(html.status).toBe(200);
    expect(await html.text()).toContain('/assets/app.js');
    for (const asset of ['/assets/app.js', '/assets/app.css']) expect((await fetch(`${base}${asset}`)).status, asset).toBe(200);
    const ok = await fetch(`${base}/api/volumes`, { headers: { authorization: `Bearer ${stowage.server.token}` } });
    expect(ok.status).toBe(200);
  });

  it('a wrong token gets the login page and no data', async () => {
    const apiAnswers: { url: string; status: number }[] = [];
    const { context, page } = await openPage('not-the-token', (p) =>
      p.on('response', (r) => {
        if (new URL(r.url()).pathname.startsWith('/api/')) apiAnswers.push({ url: r.url(), status: r.status() });
      }),
    );
    await expect.poll(() => page.getByTestId('login-error').textContent(), SHOWN_WITHIN).toBe('wrong token');
    await page.screenshot({ path: join(SHOTS, 'login.png') });
    expect(await page.getByTestId('token-input').isVisible()).toBe(true);
    expect(await page.getByTestId('logout').count()).toBe(0);
    // Asking for a view by its address does not get past the login form either.
    await page.goto(`${base}/#/volumes`);
    await page.getByTestId('login').waitFor();
    expect(await page.content()).not.toContain(volume);
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    expect(apiAnswers.length).toBeGreaterThan(0);
    expect(apiAnswers.filter((a) => a.status !== 401)).toEqual([]);
    await context.close();
  });

  it('logs in and shows the volume with its real size and two versions; browses and downloads its files', async () => {
    const { context, page } = await loggedIn();
    expect(await page.evaluate("sessionStorage.getItem('stowage.token')")).toBe(stowage.server.token);
    const row = page.locator(`[data-testid=volume-row][data-volume="${volume}"]`);
    await row.waitFor();
    expect(await row.getByTestId('volume-versions').textContent()).toBe('2');
    expect(await row.getByTestId('volume-files').textContent()).toBe('4');
    expect(await row.getByTestId('volume-size').getAttribute('title')).toBe(`${latestBytes} bytes`);
    expect(await row.getByTestId('volume-size').textContent()).toBe('1.50 MiB');
    // The server computes the stored bytes in the background; the ratio shows once it has. Both versions share
    // a.bin and b.bin: (1.25 MiB + 1.5 MiB + the README) ÷ (1.5 MiB + the README) = 1.83.
    await expect.poll(() => row.getByTestId('volume-dedup').textContent(), SHOWN_WITHIN).toBe('1.83×');
    await row.getByTestId('volume-growth').locator('canvas').first().waitFor();
    await screenshot(page, 'volumes');

    await row.getByTestId('volume-link').click();
    await expect.poll(() => page.getByTestId('detail-versions').textContent(), SHOWN_WITHIN).toBe('2');
    expect(await page.getByTestId('detail-size').getAttribute('title')).toBe(`${latestBytes} bytes`);
    expect(await page.getByTestId('version-row').count()).toBe(2);
    await page.getByTestId('growth-chart').locator('canvas').waitFor();
    const readmeRow = page.locator('[data-testid=file-row][data-path="/README.txt"]');
    await readmeRow.waitFor();
    await page.locator('[data-testid=file-row][data-path="/shards"]').getByTestId('dir-link').click();
    await page.locator('[data-testid=file-row][data-path="/shards/c.bin"]').waitFor();
    expect(await page.getByTestId('file-row').count()).toBe(3);
    await page.getByTestId('file-path').getByRole('button', { name: '/', exact: true }).click();
    await screenshot(page, 'volume');

    const [download] = await Promise.all([page.waitForEvent('download'), readmeRow.getByTestId('download-link').click()]);
    expect(download.suggestedFilename()).toBe('README.txt');
    expect(readFileSync(await download.path())).toEqual(readme);
    await context.close();
  });

  it("shows a queue's length change after a put, without reloading the page", async () => {
    const q = await Queue.fromName<string>(queue, { connection: stowage.connection, createIfMissing: true });
    const d = await Dict.fromName<string, number>(dict, { connection: stowage.connection, createIfMissing: true });
    await q.putMany(['a', 'b']);
    await q.put('g', { partition: 'gpu' });
    await d.put('k1', 1);
    const { context, page } = await loggedIn();
    await page.getByTestId('nav-dicts').click();
    const row = page.locator(`[data-testid=queue-row][data-queue="${queue}"]`);
    await expect.poll(() => row.getByTestId('queue-length').textContent(), SHOWN_WITHIN).toBe('3');
    expect(await row.getByTestId('queue-partitions').textContent()).toContain('gpu');
    await expect
      .poll(() => page.locator(`[data-testid=dict-row][data-dict="${dict}"]`).getByTestId('dict-length').textContent(), SHOWN_WITHIN)
      .toBe('1');
    // A mark on the window (browser code, given as text: this file has no DOM types): still there afterwards means the page was not reloaded.
    await page.evaluate("window.stowageTestMark = 'same page'");
    await q.putMany(['c', 'd']);
    await expect.poll(() => row.getByTestId('queue-length').textContent(), SHOWN_WITHIN).toBe('5');
    expect(await page.evaluate('window.stowageTestMark')).toBe('same page');
    await screenshot(page, 'dicts');
    await context.close();
  });

  it('shows calls from `stowage run` with their worker and placement reason', async () => {
    const add = await runCli(['run', `${FIXTURE}#add`, '40', '2'], env);
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toBe(42);
    // A call that reads the volume: the worker mounts it (and then reports that mount, for the mounts view).
    const read = await runCli(['run', `${FIXTURE}#readShard`, '"a.bin"', '--volume', `/data=${volume}`, '--reads', '/data/shards/a.bin'], env);
    expect(read.code, read.stderr).toBe(0);
    expect(JSON.parse(read.stdout)).toMatchObject({ name: 'a.bin', bytes: 1 * MiB, worker: workerId });
    const calls = await BridgeAdmin.calls({ limit: 2 }, stowage.connection);
    expect(calls.map((c) => c.workerId)).toEqual([workerId, workerId]);
    const { context, page } = await loggedIn();
    await page.getByTestId('nav-bridge').click();
    for (const call of calls) {
      const row = page.locator(`[data-testid=call-row][data-call="${call.callId}"]`);
      await row.waitFor({ timeout: SHOWN_WITHIN.timeout });
      expect(await row.getByTestId('call-worker').textContent()).toBe(workerId);
      expect(await row.getByTestId('call-state').textContent()).toBe('succeeded');
      // What `stowage bridge explain` says of the call's placement.
      expect(await row.getByTestId('call-reason').textContent()).toContain(call.decisions[0]!.reason);
    }
    await page.locator(`[data-testid=worker-row][data-worker="${workerId}"]`).waitFor();
    await screenshot(page, 'bridge');
    await context.close();
  });

  it("shows the worker's mount of the volume with what it read", async () => {
    const { context, page } = await loggedIn();
    await page.getByTestId('nav-mounts').click();
    const mount = page.getByTestId('mount-row').filter({ has: page.getByTestId('mount-client').getByText(`worker ${workerId}`, { exact: true }) }).filter({ hasText: volume });
    // Mounts report every 5 s: the report after the call's read counts its bytes.
    await expect.poll(async () => (await mount.count()) === 1 && (await mount.getByTestId('mount-bytes-read').textContent()) !== '0 B', { timeout: 20_000, interval: 250 }).toBe(true);
    await screenshot(page, 'mounts');
    await context.close();
  });

  it('a token refused later (a 401 on a poll) brings the login form back, with no data; logging out forgets the token', async () => {
    const { context, page } = await loggedIn();
    await page.locator(`[data-testid=volume-row][data-volume="${volume}"]`).waitFor();
    // As if the server stopped accepting the token the tab holds: its next poll gets a 401.
    await page.evaluate("sessionStorage.setItem('stowage.token', 'no-longer-valid')");
    await page.getByTestId('login').waitFor({ timeout: SHOWN_WITHIN.timeout });
    expect(await page.getByTestId('login').textContent()).toContain('The server refused the token');
    expect(await page.content()).not.toContain(volume);
    expect(await page.evaluate("sessionStorage.getItem('stowage.token')")).toBeNull();

    await page.getByTestId('token-input').fill(stowage.server.token);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('logout').click();
    await page.getByTestId('login').waitFor();
    expect(await page.evaluate("sessionStorage.getItem('stowage.token')")).toBeNull();
    await page.reload();
    await page.getByTestId('token-input').waitFor();
    expect(await page.getByTestId('logout').count()).toBe(0);
    await context.close();
  });
});

describe('dashboard in headless Chromium, a server hosting only dicts (--only dict)', () => {
  let stowage: Stowage | undefined;
  let browser: Browser | undefined;
  beforeEach(failWithoutBrowser);
  beforeAll(async () => {
    if (BROWSER_MISSING) return;
    stowage = await startStowage({ only: ['dict'], http: { host: '127.0.0.1', port: 0 } });
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await stowage?.stop();
  });

  it('says which services this server does not host, view by view', async () => {
    const page = await browser!.newPage();
    await page.goto(`http://${stowage!.server.httpAddress}/#/volumes`);
    await page.getByTestId('token-input').fill(stowage!.server.token);
    await page.getByTestId('login-submit').click();
    expect(await page.getByTestId('not-hosted').textContent()).toContain('volume service');
    await page.getByTestId('nav-bridge').click();
    await expect.poll(() => page.getByTestId('not-hosted').textContent(), SHOWN_WITHIN).toContain('bridge service');
    await page.getByTestId('nav-dicts').click();
    await expect.poll(() => page.getByTestId('not-hosted').textContent(), SHOWN_WITHIN).toContain('queue service');
    await page.getByTestId('dicts-table').waitFor();
    await page.close();
  });
});
