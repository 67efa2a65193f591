/**
 * Plain node:http for presigned URLs. fetch (undici) costs several times the
 * CPU per byte here (web streams, then a copy in arrayBuffer()); with a
 * keep-alive agent and the body read into one buffer of the announced length,
 * a 8 MiB chunk costs one copy.
 *
 * A URL's host is no more trusted than the server that named it: a body is
 * read only up to the most the caller expects (`maxBody`), so neither an
 * announced Content-Length nor an endless body can make the client allocate
 * more; a longer one fails the call (BodyTooLongError) without being buffered.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 64 });
const IDLE_TIMEOUT_MS = 60_000;

export interface HttpResponse {
  status: number;
  body: Buffer;
}

export interface HttpOptions {
  /** Receives the body if it fits (saving an allocation). */
  into?: Buffer;
  /** The longest body accepted for a response of this status. */
  maxBody: (status: number) => number;
}

/** A response body longer than the caller's `maxBody`: the rest of it was not read. */
export class BodyTooLongError extends Error {
  constructor(
    readonly origin: string,
    readonly status: number,
    readonly maxBytes: number,
  ) {
    super(`${origin} answered (HTTP ${status}) with a body of more than the ${maxBytes} bytes expected`);
  }
}

export function httpCall(url: string, method: 'GET' | 'PUT', headers: Record<string, string>, body: Buffer | undefined, opts: HttpOptions): Promise<HttpResponse> {
  const u = new URL(url);
  const secure = u.protocol === 'https:';
  const request = secure ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method,
        headers: body ? { ...headers, 'content-length': String(body.length) } : headers,
        agent: secure ? httpsAgent : httpAgent,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        readBody(res, opts.into, opts.maxBody(status), () => new BodyTooLongError(u.origin, status, opts.maxBody(status))).then(
          (b) => resolve({ status, body: b }),
          (err: unknown) => {
            // The rest of the body is not read: the socket is closed, not put back in the pool.
            req.destroy();
            reject(err);
          },
        );
      },
    );
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error(`no answer from ${u.origin} for ${IDLE_TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
    req.end(body);
  });
}

function readBody(res: IncomingMessage, into: Buffer | undefined, maxBytes: number, tooLong: () => Error): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const header = res.headers['content-length'];
    const announced = Number(header);
    const known = header !== undefined && Number.isSafeInteger(announced) && announced >= 0;
    if (known && announced > maxBytes) return reject(tooLong());
    const buf = !known ? undefined : into && into.length >= announced ? into.subarray(0, announced) : Buffer.allocUnsafe(announced);
    let pos = 0;
    let inBuf = 0;
    const extra: Buffer[] = [];
    const onData = (d: Buffer) => {
      if (pos + d.length > maxBytes) {
        res.off('data', onData);
        res.pause();
        return reject(tooLong());
      }
      if (buf && extra.length === 0 && pos + d.length <= buf.length) {
        d.copy(buf, pos);
        inBuf += d.length;
      } else {
        extra.push(d);
      }
      pos += d.length;
    };
    res.on('data', onData);
    res.on('end', () => resolve(buf && extra.length === 0 ? buf.subarray(0, pos) : Buffer.concat(buf ? [buf.subarray(0, inBuf), ...extra] : extra)));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('response aborted')));
  });
}

/** The most of an error's body (or of any answer but the bytes asked for) read: enough for S3's XML error. */
export const HTTP_ANSWER_BYTES = 64 * 1024;

/**
 * GET of bytes [offset, offset + length) of the object at `url` (into `into`
 * when it fits). A 2xx answer's body is those bytes: a store that ignores
 * Range sends the whole object (200, up to `maxObject` bytes), which is cut
 * here. Other answers come back as they are, their bodies bounded.
 */
export async function httpGetRange(url: string, offset: number, length: number, maxObject: number, into?: Buffer): Promise<HttpResponse> {
  const res = await httpCall(url, 'GET', { range: `bytes=${offset}-${offset + length - 1}` }, undefined, {
    into,
    // A range (206) is what was asked for; a store that ignores Range sends the whole object (200).
    maxBody: (status) => (status === 206 ? length : status === 200 ? maxObject : HTTP_ANSWER_BYTES),
  });
  if (res.status === 200 && res.body.length !== length) return { status: res.status, body: res.body.subarray(offset, offset + length) };
  return res;
}
