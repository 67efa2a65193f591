/** What every command prints: JSON for scripts, progress bars and summaries for people. */
import { SingleBar } from 'cli-progress';
import type { TransferProgress, TransferStats } from '../client/index.js';
import { bytes } from '../common/bytes.js';

export { bytes };

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A bar on stderr when it is a terminal; silent otherwise. */
export function progressBar(label: string, enabled: boolean): {
  update: (p: TransferProgress) => void;
  stop: () => void;
} {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const started = performance.now();
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {doneBytes} / {totalBytes} | {rate}/s | {files} files`,
    hideCursor: true,
    barsize: 30,
  });
  let begun = false;
  return {
    update(p) {
      const total = p.bytesTotal ?? Math.max(p.bytesDone, 1);
      const secs = (performance.now() - started) / 1000 || 1e-3;
      const payload = {
        doneBytes: bytes(p.bytesDone),
        totalBytes: p.bytesTotal === undefined ? '?' : bytes(p.bytesTotal),
        rate: bytes(p.bytesDone / secs),
        files: `${p.filesDone}/${p.filesTotal}`,
      };
      if (!begun) {
        bar.start(Math.max(total, 1), p.bytesDone, payload);
        begun = true;
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(p.bytesDone, payload);
      }
    },
    stop() {
      if (begun) bar.stop();
    },
  };
}

/** One line that says what moved: the figure dedup makes small. */
export function transferSummary(verb: string, s: TransferStats, extra = ''): string {
  const rate = s.seconds > 0 ? `${bytes(s.bytes / s.seconds)}/s` : '';
  return (
    `${verb} ${s.files} file${s.files === 1 ? '' : 's'} (${bytes(s.bytes)})${extra} in ${s.seconds.toFixed(2)}s, ${rate}; ` +
    `chunks transferred: ${s.chunksTransferred} of ${s.chunks} (${bytes(s.bytesTransferred)})`
  );
}
