// An S3 API server for tests and benchmarks: s3rver, plus request counters.
// Run with `node --openssl-legacy-provider` (s3rver's paginated listing needs it).
//   node --openssl-legacy-provider test/support/s3rver-main.cjs --dir D --bucket B [--port P]
// Prints one JSON line {"port": N} when it listens. GET /__stats returns the
// counts of requests by "METHOD kind" (kind: the first path segment after the
// bucket and optional prefix: chunks, manifests, volumes, other), and the
// bytes GETs sent by "bytes GET kind"; POST
// /__stats/reset zeroes them.
'use strict';
const fs = require('node:fs');
const S3rver = require('s3rver');
const FilesystemStore = require('s3rver/lib/stores/filesystem');

// s3rver 3.7 reads the end of `Range: bytes=0-0` (0) as "no end" and sends the
// whole object as `206 bytes 0-(size-1)`; S3 sends the one byte asked for. A
// 1-byte file at the start of a pack is read with exactly that range.
const getObject = FilesystemStore.prototype.getObject;
FilesystemStore.prototype.getObject = async function (bucket, key, options) {
  const object = await getObject.call(this, bucket, key, options);
  if (options && options.start === 0 && options.end === 0 && object && object.content && object.size > 1) {
    object.content.destroy();
    object.content = fs.createReadStream(this.getResourcePath(bucket, key, 'object'), { start: 0, end: 0 });
    object.range = { start: 0, end: 0 };
  }
  return object;
};

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const dir = opt('dir');
const bucket = opt('bucket', 'stowage');
const port = Number(opt('port', '0'));
if (!dir) {
  console.error('usage: s3rver-main.cjs --dir DIR [--bucket B] [--port P]');
  process.exit(2);
}

let counts = {};
const server = new S3rver({
  port,
  address: '127.0.0.1',
  silent: true,
  directory: dir,
  configureBuckets: [{ name: bucket }],
});
server.middleware.unshift(async (ctx, next) => {
  if (ctx.path === '/__stats') {
    if (ctx.method === 'POST') counts = {};
    ctx.body = JSON.stringify(counts);
    ctx.type = 'application/json';
    return;
  }
  if (ctx.path === '/__stats/reset') {
    counts = {};
    ctx.body = '{}';
    return;
  }
  const parts = ctx.path.split('/').filter(Boolean).slice(1);
  const known = ['chunks', 'manifests', 'volumes', 'versions', 'trees', 'incoming'];
  const kind = parts.find((p) => known.includes(p)) ?? 'other';
  const key = `${ctx.method} ${kind}`;
  counts[key] = (counts[key] ?? 0) + 1;
  await next();
  // Bytes sent back, as "bytes GET chunks" (so that sums over "GET …" keys still count requests).
  const sent = Number(ctx.response.length ?? 0);
  if (ctx.method === 'GET' && sent > 0) counts[`bytes ${key}`] = (counts[`bytes ${key}`] ?? 0) + sent;
});
server.run().then(
  ({ port: p }) => {
    process.stdout.write(`${JSON.stringify({ port: p })}\n`);
  },
  (err) => {
    console.error(`s3rver failed to start: ${err.message}`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close().finally(() => process.exit(0)));
}
