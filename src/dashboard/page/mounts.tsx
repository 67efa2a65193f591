/** #/mounts: mounts and workers reporting their chunk cache: hit ratio, bytes fetched, read throughput. */
import { ago, bytes, count, percent, rate, when } from './format.js';
import { usePoll } from './poll.js';
import type { MountsAnswer, NotHosted } from '../api-types.js';
import { EmptyRow, NotHostedNote, Num, ViewHead, isNotHosted } from './ui.js';

export function MountsView() {
  const poll = usePoll<MountsAnswer | NotHosted>('/api/mounts');
  const answer = poll.data;
  if (isNotHosted(answer)) {
    return (
      <section>
        <ViewHead title="Mounts and workers" poll={poll} />
        <NotHostedNote service="volume" />
      </section>
    );
  }
  const mounts = answer?.mounts ?? [];
  const hits = mounts.reduce((n, m) => n + m.hits, 0);
  const misses = mounts.reduce((n, m) => n + m.misses, 0);
  return (
    <section data-testid="view-mounts">
      <ViewHead title="Mounts and workers" poll={poll} />
      <div class="cards">
        <div class="card">
          <span class="label">reporting</span>
          <span class="value">{count(mounts.length)}</span>
        </div>
        <div class="card">
          <span class="label">chunk cache hit ratio</span>
          <span class="value">{hits + misses > 0 ? percent(hits / (hits + misses)) : '–'}</span>
        </div>
        <div class="card">
          <span class="label">fetched</span>
          <span class="value">{bytes(mounts.reduce((n, m) => n + m.bytesFetched, 0))}</span>
        </div>
        <div class="card">
          <span class="label">read throughput</span>
          <span class="value">{rate(mounts.reduce((n, m) => n + m.readBytesPerSec, 0))}</span>
        </div>
      </div>
      <table class="grid" data-testid="mounts-table">
        <thead>
          <tr>
            <th>client</th>
            <th>host</th>
            <th>volume</th>
            <th class="num">hit ratio</th>
            <th class="num">hits / misses</th>
            <th class="num">fetched</th>
            <th class="num">read</th>
            <th class="num">read throughput</th>
            <th class="num">cache</th>
            <th class="num">last report</th>
          </tr>
        </thead>
        <tbody>
          {answer && mounts.length === 0 && <EmptyRow columns={10} text="No mount or worker has reported yet" />}
          {mounts.map((m) => (
            <tr key={m.id} data-testid="mount-row" data-mount={m.id}>
              <td title={m.id} data-testid="mount-client">
                {m.client}
              </td>
              <td>{m.host}</td>
              <td>
                {m.volume}
                {m.version ? <span class="muted"> v{m.version}</span> : null}
              </td>
              <Num testid="mount-hit-ratio">{percent(m.hitRatio)}</Num>
              <Num>
                {count(m.hits)} / {count(m.misses)}
              </Num>
              <Num title={`${m.bytesFetched} bytes`}>{bytes(m.bytesFetched)}</Num>
              <Num title={`${m.bytesRead} bytes`} testid="mount-bytes-read">
                {bytes(m.bytesRead)}
              </Num>
              <Num>{rate(m.readBytesPerSec)}</Num>
              <Num>{bytes(m.cacheBytes)}</Num>
              <Num title={when(m.lastReportMs)}>{ago(m.lastReportMs)}</Num>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
