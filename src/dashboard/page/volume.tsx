/** #/volumes/NAME: one volume, its growth over its versions, the versions, and a file browser. */
import { useState } from 'preact/hooks';
import { apiPath } from './api.js';
import { Chart } from './chart.js';
import { FileBrowser } from './files.js';
import { BYTE_TICKS, ago, bytes, count, times, when } from './format.js';
import { usePoll } from './poll.js';
import type { NotHosted, VersionsAnswer, VolumesAnswer } from '../api-types.js';
import { EmptyRow, NotHostedNote, Num, ViewHead, isNotHosted } from './ui.js';

export function VolumeView(props: { name: string }) {
  const { name } = props;
  const list = usePoll<VolumesAnswer | NotHosted>('/api/volumes');
  const poll = usePoll<VersionsAnswer | NotHosted>(apiPath`/api/volumes/${name}/versions`);
  /** The version the file browser shows; null follows the latest. */
  const [picked, setPicked] = useState<number | null>(null);
  const head = (
    <ViewHead title={`Volume ${name}`} poll={poll}>
      <a href="#/volumes" class="back">
        ← all volumes
      </a>
    </ViewHead>
  );
  if (isNotHosted(poll.data) || isNotHosted(list.data)) {
    return (
      <section>
        {head}
        <NotHostedNote service="volume" />
      </section>
    );
  }
  const summary = list.data?.volumes.find((v) => v.name === name);
  const versions = poll.data?.versions ?? [];
  const latest = versions.at(-1)?.version ?? null;
  const shown = picked ?? latest;
  return (
    <section data-testid="view-volume" data-volume={name}>
      {head}
      {poll.error && !poll.data && <p class="note">{poll.error}</p>}
      <div class="cards">
        <div class="card">
          <span class="label">size (latest)</span>
          <span class="value" data-testid="detail-size" title={summary ? `${summary.totalBytes} bytes` : ''}>
            {bytes(summary?.totalBytes)}
          </span>
        </div>
        <div class="card">
          <span class="label">files</span>
          <span class="value">{summary ? count(summary.fileCount) : '–'}</span>
        </div>
        <div class="card">
          <span class="label">versions</span>
          <span class="value" data-testid="detail-versions">
            {poll.data ? count(versions.length) : '–'}
          </span>
        </div>
        <div class="card">
          <span class="label">dedup</span>
          <span class="value" title="logical bytes of retained versions ÷ stored chunk bytes">
            {times(summary?.dedupRatio)}
          </span>
        </div>
        <div class="card">
          <span class="label">stored</span>
          <span class="value">{bytes(summary?.storedBytes)}</span>
        </div>
      </div>
      <h2>Growth</h2>
      {versions.length > 0 ? (
        <Chart
          testid="growth-chart"
          xsMs={versions.map((v) => v.createdAtMs)}
          series={[{ label: 'size', color: '#5fb3f9', values: versions.map((v) => v.totalBytes) }]}
          yFormat={bytes}
          yIncrs={BYTE_TICKS}
          stepped
        />
      ) : (
        <p class="note">No versions yet.</p>
      )}
      <h2>Versions</h2>
      <table class="grid" data-testid="versions-table">
        <thead>
          <tr>
            <th>version</th>
            <th class="num">files</th>
            <th class="num">size</th>
            <th class="num">created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {poll.data && versions.length === 0 && <EmptyRow columns={5} text="No versions: nothing committed yet" />}
          {versions
            .slice()
            .reverse()
            .map((v) => (
              <tr key={v.version} data-testid="version-row" data-version={v.version} class={v.version === shown ? 'selected' : ''}>
                <td>v{v.version}</td>
                <Num>{count(v.fileCount)}</Num>
                <Num title={`${v.totalBytes} bytes`}>{bytes(v.totalBytes)}</Num>
                <Num title={when(v.createdAtMs)}>{ago(v.createdAtMs)}</Num>
                <td>
                  <button type="button" class="link" onClick={() => setPicked(v.version === latest ? null : v.version)} disabled={v.version === shown}>
                    {v.version === shown ? 'browsing' : 'browse'}
                  </button>
                </td>
              </tr>
            ))}
        </tbody>
      </table>
      {shown !== null && <FileBrowser volume={name} version={shown} />}
    </section>
  );
}
