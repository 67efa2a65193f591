/**
 * Plain node:http for presigned URLs. fetch (undici) costs several times the
 * CPU per byte here (web streams, then a copy in arrayBuffer()); with a
 * keep-alive agent and the body read into one buffer of the announced length,
 * a 8 MiB chunk costs one copy.
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

/** `into`, when given, receives the body if it fits (saving an allocation). */
export function httpCall(
  url: string,
  method: 'GET' | 'PUT',
  headers: Record<string, string>,
  body?: Buffer,
  into?: Buffer,
): Promise<HttpResponse> {
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
      (res) => readBody(res, into).then((b) => resolve({ status: res.statusCode ?? 0, body: b }), reject),
    );
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error(`no answer from ${u.origin} for ${IDLE_TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
    req.end(body);
  });
}

function readBody(res: IncomingMessage, into: Buffer | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const announced = Number(res.headers['content-length']);
    const known = Number.isInteger(announced) && announced >= 0;
    const buf = !known ? undefined : into && into.length >= announced ? into.subarray(0, announced) : Buffer.allocUnsafe(announced);
    let pos = 0;
    const extra: Buffer[] = [];
    res.on('data', (d: Buffer) => {
      if (buf && pos + d.length <= buf.length) d.copy(buf, pos);
      else extra.push(d);
      pos += d.length;
    });
    res.on('end', () => resolve(buf && extra.length === 0 ? buf.subarray(0, pos) : Buffer.concat(buf ? [buf, ...extra] : extra)));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('response aborted')));
  });
}
