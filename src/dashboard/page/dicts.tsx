/** #/dicts: dicts and queues, their lengths and operations per second; a queue's partitions and dead letters. */
import { Chart } from './chart.js';
import { count, opsPerSec } from './format.js';
import { usePoll } from './poll.js';
import type { DictsAnswer, History, NotHosted } from '../api-types.js';
import { EmptyRow, NotHostedNote, Num, ViewHead, isNotHosted } from './ui.js';

function Spark(props: { history: History; color: string }) {
  if (props.history.length < 2) return <span class="muted">–</span>;
  return (
    <Chart
      sparkline
      xsMs={props.history.map(([t]) => t)}
      series={[{ label: 'ops/s', color: props.color, values: props.history.map(([, v]) => v) }]}
    />
  );
}

export function DictsView() {
  const poll = usePoll<DictsAnswer | NotHosted>('/api/dicts');
  const answer = poll.data;
  if (isNotHosted(answer)) {
    return (
      <section>
        <ViewHead title="Dicts and queues" poll={poll} />
        <NotHostedNote service="dict and queue" />
      </section>
    );
  }
  const dicts = answer?.dicts ?? [];
  const queues = answer?.queues ?? [];
  return (
    <section data-testid="view-dicts">
      <ViewHead title="Dicts and queues" poll={poll} />
      <h2>Queues</h2>
      {answer?.queuesHosted === false && <NotHostedNote service="queue" />}
      <table class="grid" data-testid="queues-table">
        <thead>
          <tr>
            <th>name</th>
            <th class="num">length</th>
            <th>partitions</th>
            <th class="num">dead letters</th>
            <th class="num">ops/s</th>
            <th class="spark-col">last 10 min</th>
          </tr>
        </thead>
        <tbody>
          {answer && answer.queuesHosted !== false && queues.length === 0 && <EmptyRow columns={6} text="No queues yet" />}
          {queues.map((q) => (
            <tr key={q.name} data-testid="queue-row" data-queue={q.name}>
              <td>{q.name}</td>
              <Num testid="queue-length">{count(q.length)}</Num>
              <td class="partitions" data-testid="queue-partitions">
                {q.partitions.length === 0 && <span class="muted">–</span>}
                {q.partitions.map((p) => (
                  <span class="chip" key={p.name} title={`partition ${p.name || '(default)'}: ${p.length}`}>
                    {p.name || '(default)'} <b>{count(p.length)}</b>
                  </span>
                ))}
              </td>
              <Num testid="queue-dead-letters">
                <span class={q.deadLetters > 0 ? 'warn' : ''}>{count(q.deadLetters)}</span>
              </Num>
              <Num>{opsPerSec(q.opsPerSec)}</Num>
              <td class="spark-col">
                <Spark history={q.history} color="#f0a04b" />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Dicts</h2>
      {answer?.dictsHosted === false && <NotHostedNote service="dict" />}
      <table class="grid" data-testid="dicts-table">
        <thead>
          <tr>
            <th>name</th>
            <th class="num">length</th>
            <th class="num">ops/s</th>
            <th class="spark-col">last 10 min</th>
          </tr>
        </thead>
        <tbody>
          {answer && answer.dictsHosted !== false && dicts.length === 0 && <EmptyRow columns={4} text="No dicts yet" />}
          {dicts.map((d) => (
            <tr key={d.name} data-testid="dict-row" data-dict={d.name}>
              <td>{d.name}</td>
              <Num testid="dict-length">{count(d.length)}</Num>
              <Num>{opsPerSec(d.opsPerSec)}</Num>
              <td class="spark-col">
                <Spark history={d.history} color="#5fb3f9" />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
