/** #/bridge: workers, calls with where and why they ran, and the placement hit ratio over time. */
import { Chart } from './chart.js';
import { ago, bytes, count, duration, percent, when } from './format.js';
import { usePoll } from './poll.js';
import type { BridgeAnswer, NotHosted } from '../api-types.js';
import { EmptyRow, NotHostedNote, Num, ViewHead, isNotHosted } from './ui.js';

export function BridgeView() {
  const poll = usePoll<BridgeAnswer | NotHosted>('/api/bridge');
  const answer = poll.data;
  if (isNotHosted(answer)) {
    return (
      <section>
        <ViewHead title="Compute bridge" poll={poll} />
        <NotHostedNote service="bridge" />
      </section>
    );
  }
  const workers = answer?.workers ?? [];
  const calls = answer?.calls ?? [];
  const placement = answer?.placement;
  const slots = workers.reduce((n, w) => n + w.slots, 0);
  const running = workers.reduce((n, w) => n + w.running, 0);
  return (
    <section data-testid="view-bridge">
      <ViewHead title="Compute bridge" poll={poll} />
      <div class="cards">
        <div class="card">
          <span class="label">workers</span>
          <span class="value">{count(workers.length)}</span>
        </div>
        <div class="card">
          <span class="label">running / slots</span>
          <span class="value">
            {count(running)} / {count(slots)}
          </span>
        </div>
        <div class="card">
          <span class="label">placement hits</span>
          <span class="value" data-testid="placement-ratio" title={placement ? `${placement.hits} of ${placement.total} placements on a worker caching the call's data` : ''}>
            {placement && placement.total > 0 ? percent(placement.hits / placement.total) : '–'}
          </span>
        </div>
      </div>
      <h2>Placement hit ratio</h2>
      {placement && placement.history.length > 1 ? (
        <Chart
          testid="placement-chart"
          height={140}
          xsMs={placement.history.map(([t]) => t)}
          series={[{ label: 'hit ratio', color: '#7bd88f', values: placement.history.map(([, v]) => v) }]}
          yFormat={(v) => `${Math.round(v * 100)}%`}
          yRange={[0, 1]}
        />
      ) : (
        <p class="note">Not enough placements yet to draw.</p>
      )}
      <h2>Workers</h2>
      <table class="grid" data-testid="workers-table">
        <thead>
          <tr>
            <th>worker</th>
            <th>host</th>
            <th class="num">slots</th>
            <th class="num">running</th>
            <th class="num">cached chunks</th>
            <th class="num">cached bytes</th>
            <th class="num">registered</th>
          </tr>
        </thead>
        <tbody>
          {answer && workers.length === 0 && <EmptyRow columns={7} text="No workers registered: stowage worker --bridge ADDRESS" />}
          {workers.map((w) => (
            <tr key={w.id} data-testid="worker-row" data-worker={w.id}>
              <td>{w.id}</td>
              <td>{w.host}</td>
              <Num>{count(w.slots)}</Num>
              <Num>{count(w.running)}</Num>
              <Num>{count(w.cachedChunks)}</Num>
              <Num title={`${w.cachedBytes} bytes`}>{bytes(w.cachedBytes)}</Num>
              <Num title={when(w.registeredAtMs)}>{ago(w.registeredAtMs)}</Num>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Calls</h2>
      <table class="grid" data-testid="calls-table">
        <thead>
          <tr>
            <th>call</th>
            <th>function</th>
            <th>state</th>
            <th class="num">attempt</th>
            <th>worker</th>
            <th class="num">created</th>
            <th class="num">duration</th>
            <th>placement</th>
          </tr>
        </thead>
        <tbody>
          {answer && calls.length === 0 && <EmptyRow columns={8} text="No calls yet" />}
          {calls.map((c) => (
            <tr key={c.id} data-testid="call-row" data-call={c.id}>
              <td class="mono" title={c.id}>
                {c.id.length > 12 ? `${c.id.slice(0, 12)}…` : c.id}
              </td>
              <td class="mono">{c.function}</td>
              <td data-testid="call-state">
                <span class={`state state-${c.state}`}>{c.state}</span>
              </td>
              <Num>{count(c.attempt)}</Num>
              <td data-testid="call-worker">{c.worker || <span class="muted">–</span>}</td>
              <Num title={when(c.createdAtMs)}>{ago(c.createdAtMs)}</Num>
              <Num>{duration(c.durationMs)}</Num>
              <td class="reason" data-testid="call-reason">
                {c.placementReason}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
