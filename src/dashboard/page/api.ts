/**
 * The page's one way to the server: fetch with the token in an
 * `Authorization: Bearer` header. The token lives in sessionStorage only
 * (gone when the tab closes; never in a URL, a cookie or localStorage).
 */

const TOKEN_KEY = 'stowage.token';

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The server refused the token (401): the page goes back to the login form. */
export class Unauthorized extends Error {
  constructor() {
    super('wrong token');
  }
}

/** Any other failed request: the status and what the server said, or the network error. */
export class RequestFailed extends Error {}

const unauthorizedListeners = new Set<() => void>();

/** Called on every 401, whichever request got it. */
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

/**
 * A JSON request to the API with `token` (the saved one by default). A 401
 * throws Unauthorized and tells the onUnauthorized listeners; other failures
 * throw RequestFailed.
 */
export async function api<T>(path: string, init: { method?: string; body?: unknown; token?: string; signal?: AbortSignal } = {}): Promise<T> {
  const token = init.token ?? savedToken() ?? '';
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new RequestFailed(`cannot reach the server: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (res.status === 401) {
    for (const l of unauthorizedListeners) l();
    throw new Unauthorized();
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    throw new RequestFailed(`${res.status} ${res.statusText}: not JSON`);
  }
  if (!res.ok) {
    const said = typeof body === 'object' && body !== null && 'error' in body ? String(body.error) : res.statusText;
    throw new RequestFailed(`${res.status}: ${said}`);
  }
  return body as T;
}

/** Path segments are user names (volumes, files): always encoded. */
export function apiPath(strings: TemplateStringsArray, ...parts: (string | number)[]): string {
  return strings.reduce((acc, s, i) => acc + s + (i < parts.length ? encodeURIComponent(String(parts[i])) : ''), '');
}
