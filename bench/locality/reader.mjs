// The function bench/locality runs: reads one shard of the dataset volume
// through the worker's mount, in 8 MiB reads, and says how much it read and
// on which worker. Bundled and run by `stowage worker` processes.
import { open } from 'node:fs/promises';
import { volumePath } from 'stowage';

export async function readShard(shard) {
  const fh = await open(`${volumePath('/data')}/shards/${shard}.bin`);
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
  let bytes = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      bytes += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return { shard, bytes, worker: process.env.STOWAGE_WORKER_ID };
}
