import { it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { startRedisCluster } from '../support/redis-cluster.js';
it('starts', async () => {
  const t = Date.now();
  const c = await startRedisCluster();
  try {
  console.log('started in', Date.now() - t, c.url, await c.masters());
  const m = await c.masterOf('foo');
  console.log('master of foo', m);
  const t2 = Date.now();
  const p = c.kill(m).catch(e => e);
  for (let i = 0; i < 8; i++) {
    await new Promise(r => setTimeout(r, 1500));
    const other = c.nodes.find(n => n.pid !== 0 && n.port !== m)!;
    console.log(execFileSync('redis-cli', ['-p', String(other.port), 'cluster', 'nodes']).toString());
  }
  console.log('failover', await p, Date.now() - t2, await c.masters());
  } finally { await c.stop(); }
});
