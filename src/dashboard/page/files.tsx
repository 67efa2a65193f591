/**
 * The file browser of one version of a volume. A version never changes, so a
 * directory's listing is fetched once (not polled). A download asks the server
 * for a short-lived link when the user clicks (the link works without the
 * token header, so a plain navigation can fetch it) and follows it.
 */
import { useState } from 'preact/hooks';
import { api, apiPath } from './api.js';
import { ago, bytes, when } from './format.js';
import { usePoll } from './poll.js';
import type { DownloadLink, DirEntry, FilesAnswer, NotHosted } from '../api-types.js';
import { EmptyRow, Num, isNotHosted } from './ui.js';

const ORDER = { dir: 0, symlink: 1, file: 2 } as const;

export function FileBrowser(props: { volume: string; version: number }) {
  const { volume, version } = props;
  const [path, setPath] = useState('/');
  const [downloadError, setDownloadError] = useState<string | null>(null);
  const poll = usePoll<FilesAnswer | NotHosted>(`${apiPath`/api/volumes/${volume}/files`}?version=${version}&path=${encodeURIComponent(path)}`, null);
  const answer = isNotHosted(poll.data) ? undefined : poll.data;
  const entries = (answer?.entries ?? []).slice().sort((a, b) => ORDER[a.type] - ORDER[b.type] || a.name.localeCompare(b.name));
  const parts = path.split('/').filter(Boolean);

  async function download(entry: DirEntry) {
    setDownloadError(null);
    try {
      const { url } = await api<DownloadLink>(apiPath`/api/volumes/${volume}/download-link`, { method: 'POST', body: { path: entry.path, version } });
      const a = document.createElement('a');
      a.href = url;
      a.download = entry.name;
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) {
      setDownloadError(`${entry.path}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  return (
    <div class="files" data-testid="file-browser">
      <h2>
        Files of v{version}{' '}
        <span class="crumbs" data-testid="file-path">
          <button type="button" class="link" onClick={() => setPath('/')}>
            /
          </button>
          {parts.map((p, i) => (
            <span key={i}>
              <button type="button" class="link" onClick={() => setPath(`/${parts.slice(0, i + 1).join('/')}`)}>
                {p}
              </button>
              {i < parts.length - 1 ? '/' : ''}
            </span>
          ))}
        </span>
      </h2>
      {poll.error && <p class="note">{poll.error}</p>}
      {downloadError && <p class="note">download failed: {downloadError}</p>}
      <table class="grid" data-testid="files-table">
        <thead>
          <tr>
            <th>name</th>
            <th>type</th>
            <th class="num">size</th>
            <th class="num">modified</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {path !== '/' && (
            <tr>
              <td colSpan={5}>
                <button type="button" class="link" onClick={() => setPath(`/${parts.slice(0, -1).join('/')}`)}>
                  ..
                </button>
              </td>
            </tr>
          )}
          {answer && entries.length === 0 && <EmptyRow columns={5} text="empty directory" />}
          {entries.map((e) => (
            <tr key={e.path} data-testid="file-row" data-path={e.path}>
              <td>
                {e.type === 'dir' ? (
                  <button type="button" class="link" onClick={() => setPath(e.path)} data-testid="dir-link">
                    {e.name}/
                  </button>
                ) : (
                  e.name
                )}
              </td>
              <td>{e.type}</td>
              <Num title={`${e.size} bytes`}>{e.type === 'dir' ? '' : bytes(e.size)}</Num>
              <Num title={e.mtimeMs ? when(e.mtimeMs) : ''}>{ago(e.mtimeMs)}</Num>
              <td>
                {e.type === 'file' && (
                  <button type="button" class="link" onClick={() => void download(e)} data-testid="download-link">
                    download
                  </button>
                )}
              </td>
            </tr>
          ))}
          {answer?.truncated && <EmptyRow columns={5} text="… more entries than shown (the first 1,000)" />}
        </tbody>
      </table>
    </div>
  );
}
