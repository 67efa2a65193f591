/**
 * `stowage serve --http HOST:PORT`: the dashboard's page, its JSON API and
 * /metrics, on node:http beside the gRPC port, or node:https with the gRPC
 * port's certificate and key when the server runs with TLS.
 *
 * Access: nothing but the page itself (`/`, `/assets/app.js`,
 * `/assets/app.css`: no data in them) is served without a token, sent as
 * `Authorization: Bearer <token>`: the admin token or a scoped one (the same
 * check as gRPC: common/tokens.ts); the page asks for it and keeps it in
 * sessionStorage. A refused request gets 401 (unknown, expired, revoked) or
 * 403 (outside the token's scopes) and a JSON error, never data. Any valid
 * token may look; each answer holds only what its scopes may read: the lists
 * of volumes, dicts, queues and mounts are filtered, a volume's versions,
 * files and download links need read on it, the bridge needs read on the
 * bridge, and /metrics (every name of every service) the admin token or
 * `*:*:read`. Downloads are the one exception to the
 * header: a link made by `POST /api/volumes/NAME/download-link` (with the
 * token) names one file of one version and is signed with a key this process
 * drew at random, for LINK_TTL_MS, so that the browser can follow it as a
 * plain link; a restart voids every link.
 *
 * Errors: a StowageError becomes its HTTP status (NOT_FOUND 404,
 * INVALID_ARGUMENT 400, UNAVAILABLE 503, …) with its message; anything else
 * is 500 and logged.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import {
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
  UnauthenticatedError,
  isStowageError,
  messageOf,
} from '../common/errors.js';
import { canRead, describeNeed, firstUnmet, SCOPE_SERVICES, type Need, type Principal } from '../common/scopes.js';
import { tokenLabel, type Authenticator } from '../common/tokens.js';
import type { Logger } from '../common/logger.js';
import { checkName, normalizeFilePath } from '../common/validate.js';
import { DashboardApi } from './api.js';
import type { DashboardSources } from './types.js';

const LINK_TTL_MS = 5 * 60_000;
const MAX_BODY_BYTES = 64 * 1024;

/** Where `npm run build` puts the page (scripts/build-dashboard.mjs), from dist/src/dashboard/ or src/dashboard/. */
function assetsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${join('dist', 'src')}`) ? join(here, '..', '..', 'dashboard') : join(here, '..', '..', 'dist', 'dashboard');
}

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/assets/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/assets/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

const STATUS: Record<string, number> = {
  INVALID_ARGUMENT: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  FAILED_PRECONDITION: 412,
  RESOURCE_EXHAUSTED: 413,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
};

export interface HttpOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Checks the bearer token of each request (the server's TokenStore). */
  tokens: Authenticator;
  sources: DashboardSources;
  log: Logger;
  /** How often rates are sampled (tests shorten it; default 5 s). */
  sampleEveryMs?: number;
  /** Serve HTTPS with this certificate (chain) and key (the gRPC port's); plain HTTP when undefined. */
  tls?: { cert: Buffer; key: Buffer };
}

export interface RunningHttp {
  /** host:port it listens on. */
  address: string;
  readonly api: DashboardApi;
  close(): Promise<void>;
}

export async function startHttp(opts: HttpOptions): Promise<RunningHttp> {
  const api = new DashboardApi(opts.sources, opts.log, opts.sampleEveryMs);
  const links = new DownloadLinks();
  const assets = assetsDir();
  const listener: RequestListener = (req, res) => {
    handle(req, res).catch((err: unknown) => fail(res, err, opts.log, req.url ?? ''));
  };
  const server: Server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, listener) : createServer(listener);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const path = url.pathname;
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    const asset = ASSETS[path];
    if (asset && req.method === 'GET') return serveAsset(res, join(assets, asset.file), asset.type);
    if (path.startsWith('/download/') && req.method === 'GET') return download(res, links.check(path.slice('/download/'.length)));
    const who = opts.tokens.authenticate(req.headers.authorization);
    if (path === '/metrics' && req.method === 'GET') {
      // Metrics name every volume, dict and queue: only a token that may read them all sees them.
      demand(who, SCOPE_SERVICES.map((service): Need => ({ service, access: 'read', all: true })), path);
      if (!opts.sources.metrics) throw new UnavailableError('this server keeps no metrics');
      const text = await opts.sources.metrics.render();
      res.writeHead(200, { 'Content-Type': opts.sources.metrics.contentType, 'Cache-Control': 'no-store' });
      res.end(text);
      return;
    }
    json(res, await route(req, url, who));
  }

  async function route(req: IncomingMessage, url: URL, who: Principal): Promise<object> {
    const readable = (service: (typeof SCOPE_SERVICES)[number], name: string) => canRead(who, service, name);
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const get = req.method === 'GET';
    if (parts[0] !== 'api') return notFound(url.pathname);
    const [, what, name, sub] = parts;
    if (get && parts.length === 2) {
      switch (what) {
        case 'whoami':
          return api.whoami();
        case 'volumes':
          return api.volumes(readable);
        case 'dicts':
          return api.dicts(readable);
        case 'bridge':
          demand(who, [{ service: 'bridge', access: 'read' }], url.pathname);
          return api.bridge();
        case 'mounts':
          return api.mounts(readable);
      }
    }
    if (what === 'volumes' && name !== undefined && parts.length === 4) {
      demand(who, [{ service: 'volume', access: 'read', name }], url.pathname);
      if (get && sub === 'versions') return api.versions(name);
      if (get && sub === 'files') return api.files(name, DashboardApi.versionParam(url.searchParams.get('version')), url.searchParams.get('path') ?? '/');
      if (req.method === 'POST' && sub === 'download-link') {
        const volumes = opts.sources.volumes;
        if (!volumes) return { hosted: false };
        const body = await readJson(req);
        checkName('volume', name);
        const path = normalizeFilePath(typeof body.path === 'string' ? body.path : '');
        const version = DashboardApi.versionParam(body.version === undefined ? null : String(body.version));
        // The link pins the version it was made for: a later commit does not change what it downloads.
        const found = await volumes.stat(name, version, path);
        return { url: `/download/${links.make({ volume: name, version: found.version, path })}`, size: found.size, version: found.version };
      }
    }
    return notFound(url.pathname);
  }

  async function download(res: ServerResponse, file: LinkTarget): Promise<void> {
    const volumes = opts.sources.volumes;
    if (!volumes) throw new UnavailableError('this server does not host the volume service');
    const f = await volumes.open(file.volume, file.version, file.path);
    const base = file.path.split('/').at(-1)!;
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(f.size),
      'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(base)}`,
      'Cache-Control': 'private, no-store',
    });
    // A chunk that fails its hash ends the body early: the client sees a short download, never wrong bytes.
    await pipeline(f.body, res).catch((err: unknown) => {
      opts.log.warn({ volume: file.volume, path: file.path, err: messageOf(err) }, 'dashboard: download ended early');
      res.destroy();
    });
  }

  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', (err) => reject(new UnavailableError(`cannot listen for the dashboard on ${opts.host}:${opts.port}: ${err.message} (pick another with --http HOST:PORT)`)));
    server.listen(opts.port, opts.host, () => resolve((server.address() as { port: number }).port));
  });
  return {
    address: `${opts.host}:${port}`,
    api,
    async close() {
      api.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Throws PERMISSION_DENIED (403) naming the first scope `who` lacks. */
function demand(who: Principal, needs: Need[], path: string): void {
  const unmet = firstUnmet(who, needs);
  if (unmet) throw new PermissionDeniedError(`this token (${tokenLabel(who.id)}) lacks ${describeNeed(unmet)} for ${path}`);
}

async function serveAsset(res: ServerResponse, file: string, type: string): Promise<void> {
  let body: Buffer;
  try {
    body = await readFile(file);
  } catch {
    res.writeHead(503, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`the dashboard page is not built (${file} is missing): run npm run build\n`);
    return;
  }
  res.writeHead(200, {
    'Content-Type': type,
    'Cache-Control': 'no-cache',
    // The page loads only its own script and style, and talks only to this server.
    'Content-Security-Policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
  });
  res.end(body);
}

function json(res: ServerResponse, body: object, status = 200): void {
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(body));
}

function notFound(path: string): never {
  throw new NotFoundError(`no such endpoint: ${path}`);
}

function fail(res: ServerResponse, err: unknown, log: Logger, url: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const status = isStowageError(err) ? (STATUS[err.code] ?? 500) : 500;
  if (status === 500) log.error({ url: url.split('?')[0], err: messageOf(err) }, 'dashboard request failed');
  json(res, { error: status === 500 && !isStowageError(err) ? 'internal error (see the server log)' : messageOf(err) }, status);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY_BYTES) throw new InvalidArgumentError(`request body over ${MAX_BODY_BYTES} bytes`);
    parts.push(c);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(parts).toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // below
  }
  throw new InvalidArgumentError('the request body must be a JSON object, e.g. {"path": "/a/b.bin", "version": 3}');
}

interface LinkTarget {
  volume: string;
  version: number;
  path: string;
}

/** Signed, expiring download links (see the head of this file). */
class DownloadLinks {
  private readonly key = randomBytes(32);

  make(t: LinkTarget): string {
    const payload = Buffer.from(JSON.stringify({ ...t, e: Date.now() + LINK_TTL_MS })).toString('base64url');
    return `${payload}.${this.sign(payload)}`;
  }

  check(link: string): LinkTarget {
    const [payload = '', sig = ''] = link.split('.');
    const want = Buffer.from(this.sign(payload));
    const given = Buffer.from(sig);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      throw new UnauthenticatedError('this download link is not valid (links last 5 minutes and end when the server restarts): make a new one from the dashboard');
    }
    const t = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as LinkTarget & { e: number };
    if (Date.now() > t.e) throw new UnauthenticatedError('this download link has expired (links last 5 minutes): make a new one from the dashboard');
    return { volume: t.volume, version: t.version, path: t.path };
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }
}
