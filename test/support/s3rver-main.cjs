// An S3 API server for tests and benchmarks: s3rver, plus request counters.
// Run with `node --openssl-legacy-provider` (s3rver's paginated listing needs it).
//   node --openssl-legacy-provider test/support/s3rver-main.cjs --dir D --bucket B [--port P]
// Prints one JSON line {"port": N} when it listens. GET /__stats returns the
// counts of requests by "METHOD kind" (kind: the first path segment after the
// bucket and optional prefix: chunks, manifests, volumes, other), and the
// bytes GETs sent by "bytes GET kind"; POST
// /__stats/reset zeroes them.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { Readable, Transform } = require('node:stream');
const { pipeline } = require('node:stream/promises');
const S3rver = require('s3rver');
const FilesystemStore = require('s3rver/lib/stores/filesystem');
const S3Object = require('s3rver/lib/models/object');
const { walk } = require('s3rver/lib/utils');

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

// s3rver 3.7 writes an object in place and answers the PUT before the bytes
// are on disk: a GET during or just after a PUT (also a PUT over an existing
// key) can read a prefix. An S3 PUT is atomic, and BlobStore's contract says
// so (test/blob-store-contract.test.ts races readers with puts), so the object
// is written beside its final name, flushed, then renamed into place.
FilesystemStore.prototype.putObject = async function (object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
  const tmp = `${objectPath}.tmp-${crypto.randomBytes(6).toString('hex')}`;
  const md5 = crypto.createHash('md5');
  let size = 0;
  const count = new Transform({
    transform(chunk, _encoding, callback) {
      md5.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  const content = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
  try {
    await pipeline(content, count, fs.createWriteStream(tmp));
    await fs.promises.rename(tmp, objectPath);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  const digest = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
};

// s3rver 3.7 lists keys in the order it walks directories ('a/b' before
// 'a-b', and readdir order within a directory), and pages from the last key it
// returned: keys that sort before it but were walked later are never listed.
// S3 lists in UTF-8 byte order, which BlobStore.list promises; so collect the
// matching keys, sort them, and page over that.
FilesystemStore.prototype.listObjects = async function (bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const bucketPath = this.getBucketPath(bucket);
  const prefixPath = `${bucketPath}/${FilesystemStore.encodeKeyPath(prefix)}`;
  const objectSuffix = '._S3rver_object';
  const after = Buffer.from(startAfter);
  const found = [];
  const commonPrefixes = new Set();
  if (!delimiter) {
    // Without a delimiter (a recursive listing): walk in key order, skip what is at or before startAfter,
    // and stop one key past a page, so that paging through N keys costs about N, not N²/1000.
    for (const key of keysInOrder(bucketPath, '', prefix, after)) {
      found.push(key);
      if (found.length > maxKeys) break;
    }
  }
  // Only directories that can hold keys under the prefix.
  const within = (dir) => dir.startsWith(prefixPath) || prefixPath.startsWith(dir);
  if (delimiter) for (const keyPath of walk(bucketPath, within)) {
    if (!keyPath.endsWith(objectSuffix)) continue;
    const key = FilesystemStore.decodeKeyPath(keyPath.slice(bucketPath.length + 1, -objectSuffix.length));
    if (!key.startsWith(prefix)) continue;
    const cut = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
    if (cut !== -1) commonPrefixes.add(key.slice(0, cut + delimiter.length));
    else if (Buffer.compare(Buffer.from(key), after) > 0) found.push(key);
  }
  found.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const keys = found.slice(0, maxKeys);
  const metadata = await Promise.all(
    keys.map((key) =>
      this.getMetadata(bucket, key).catch((err) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      }),
    ),
  );
  return {
    objects: keys.flatMap((key, i) => (metadata[i] ? [new S3Object(bucket, key, null, metadata[i])] : [])),
    commonPrefixes: [...commonPrefixes].sort(),
    isTruncated: found.length > keys.length,
  };
};

/**
 * Keys under `dirPath` (whose keys start with `keyPrefix`) in UTF-8 byte order:
 * a directory sorts as its name plus '/', which places its whole subtree right
 * among its siblings. Subtrees that hold no key under `prefix`, or none after
 * `after`, are not read.
 */
function* keysInOrder(dirPath, keyPrefix, prefix, after) {
  const objectSuffix = '._S3rver_object';
  let entries;
  try {
    entries = require('node:fs').readdirSync(dirPath, { withFileTypes: true });
  } catch {
    return;
  }
  const items = [];
  for (const e of entries) {
    if (e.isDirectory()) items.push({ sort: Buffer.from(`${keyPrefix}${e.name}/`), dir: e.name });
    else if (e.name.endsWith(objectSuffix)) items.push({ sort: Buffer.from(keyPrefix + e.name.slice(0, -objectSuffix.length)) });
  }
  items.sort((a, b) => Buffer.compare(a.sort, b.sort));
  for (const it of items) {
    const name = it.sort.toString();
    if (it.dir !== undefined) {
      if (!(name.startsWith(prefix) || prefix.startsWith(name))) continue;
      // Everything below sorts before `after` unless `after` is itself below.
      if (Buffer.compare(it.sort, after) < 0 && !after.toString().startsWith(name)) continue;
      yield* keysInOrder(`${dirPath}/${it.dir}`, name, prefix, after);
    } else if (name.startsWith(prefix) && Buffer.compare(it.sort, after) > 0) {
      yield name;
    }
  }
}

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
