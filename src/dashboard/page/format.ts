/** Numbers as people read them: bytes in KiB/MiB/GiB, durations, relative times, ratios. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (Math.abs(n) < 1024) return `${n} B`;
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[u]}`;
}

/** Tick spacings for a bytes axis: 1, 2, 4 … 512 of each unit. */
export const BYTE_TICKS: number[] = UNITS.flatMap((_, u) => Array.from({ length: 10 }, (_, i) => 2 ** i * 1024 ** u));

export function rate(bytesPerSec: number): string {
  return `${bytes(Math.round(bytesPerSec))}/s`;
}

export function count(n: number): string {
  return n.toLocaleString('en-US');
}

export function opsPerSec(n: number): string {
  return `${n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)}/s`;
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m - h * 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** "12 s ago", "3 min ago", "2 h ago", "in 5 s" (clocks drift). */
export function ago(ms: number | null | undefined, now = Date.now()): string {
  if (!ms) return '–';
  const d = now - ms;
  const s = Math.round(Math.abs(d) / 1000);
  const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 172_800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86_400)} d`;
  return d >= -1000 ? `${text} ago` : `in ${text}`;
}

/** A calendar time, for tooltips next to ago(). */
export function when(ms: number): string {
  return new Date(ms).toLocaleString();
}

/** 0.873 → "87.3%"; null → "–". */
export function percent(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return '–';
  return `${(ratio * 100).toFixed(1)}%`;
}

/** A dedup ratio: 2.5 → "2.50×". */
export function times(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return '–';
  return `${ratio.toFixed(2)}×`;
}
