/** #/volumes: every volume with its size, files, versions, dedup ratio and growth. */
import { apiPath } from './api.js';
import { Chart } from './chart.js';
import { ago, bytes, count, times, when } from './format.js';
import { usePoll } from './poll.js';
import type { NotHosted, VersionsAnswer, VolumeSummary, VolumesAnswer } from '../api-types.js';
import { EmptyRow, NotHostedNote, Num, ViewHead, isNotHosted } from './ui.js';

export function volumeHref(name: string): string {
  return `#/volumes/${encodeURIComponent(name)}`;
}

/**
 * Rows that draw their growth: each costs one request for the volume's
 * versions, made again only when a version is added or dropped (the row is
 * keyed by its version count and latest version), never on every poll.
 */
const GROWTH_ROWS = 50;

/** A volume's size over its versions, in a table cell. */
function Growth(props: { volume: VolumeSummary }) {
  const poll = usePoll<VersionsAnswer | NotHosted>(apiPath`/api/volumes/${props.volume.name}/versions`, null);
  const versions = isNotHosted(poll.data) ? [] : (poll.data?.versions ?? []);
  if (versions.length < 2) return <span class="muted">–</span>;
  return (
    <Chart
      sparkline
      stepped
      xsMs={versions.map((v) => v.createdAtMs)}
      series={[{ label: 'size', color: '#5fb3f9', values: versions.map((v) => v.totalBytes) }]}
    />
  );
}

export function VolumesView() {
  const poll = usePoll<VolumesAnswer | NotHosted>('/api/volumes');
  const answer = poll.data;
  if (isNotHosted(answer)) {
    return (
      <section>
        <ViewHead title="Volumes" poll={poll} />
        <NotHostedNote service="volume" />
      </section>
    );
  }
  const volumes = answer?.volumes ?? [];
  const totals = volumes.reduce(
    (t, v) => ({ logical: t.logical + (v.logicalBytes ?? 0), stored: t.stored + (v.storedBytes ?? 0), latest: t.latest + v.totalBytes }),
    { logical: 0, stored: 0, latest: 0 },
  );
  return (
    <section data-testid="view-volumes">
      <ViewHead title="Volumes" poll={poll} />
      <div class="cards">
        <div class="card">
          <span class="label">volumes</span>
          <span class="value" data-testid="volume-count">{count(volumes.length)}</span>
        </div>
        <div class="card">
          <span class="label">latest versions</span>
          <span class="value">{bytes(totals.latest)}</span>
        </div>
        <div class="card">
          <span class="label">all retained versions</span>
          <span class="value">{bytes(totals.logical)}</span>
        </div>
        <div class="card">
          <span class="label">stored (distinct chunks)</span>
          <span class="value">{bytes(totals.stored)}</span>
        </div>
      </div>
      <table class="grid" data-testid="volumes-table">
        <thead>
          <tr>
            <th>name</th>
            <th class="num">size</th>
            <th class="num">files</th>
            <th class="num">versions</th>
            <th class="num">latest</th>
            <th class="num">logical</th>
            <th class="num">stored</th>
            <th class="num" title="logical bytes ÷ stored bytes">dedup</th>
            <th class="num">created</th>
            <th class="spark-col" title="size of each version, oldest to newest">growth</th>
          </tr>
        </thead>
        <tbody>
          {answer && volumes.length === 0 && <EmptyRow columns={10} text="No volumes yet: stowage volume create NAME" />}
          {volumes.map((v, i) => (
            <tr key={v.name} data-testid="volume-row" data-volume={v.name}>
              <td>
                <a href={volumeHref(v.name)} data-testid="volume-link">
                  {v.name}
                </a>
                {v.ephemeral && <span class="tag">ephemeral</span>}
              </td>
              <Num title={`${v.totalBytes} bytes`} testid="volume-size">
                {bytes(v.totalBytes)}
              </Num>
              <Num testid="volume-files">{count(v.fileCount)}</Num>
              <Num testid="volume-versions">{count(v.versionCount)}</Num>
              <Num>v{v.latestVersion}</Num>
              <Num title={v.logicalBytes === null ? 'not computed yet' : `${v.logicalBytes} bytes`}>{bytes(v.logicalBytes)}</Num>
              <Num title={v.storedBytes === null ? 'not computed yet' : `${v.storedBytes} bytes`}>{bytes(v.storedBytes)}</Num>
              <Num testid="volume-dedup">{times(v.dedupRatio)}</Num>
              <Num title={when(v.createdAtMs)}>{ago(v.createdAtMs)}</Num>
              <td class="spark-col" data-testid="volume-growth">
                {i < GROWTH_ROWS ? <Growth key={`${v.versionCount}/${v.latestVersion}`} volume={v} /> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
