/**
 * A strict parser of the Prometheus text exposition format (0.0.4), for the
 * metrics tests: every line must be a HELP, a TYPE, another comment, a blank
 * line or a sample, and it throws on the first one that is not, naming it.
 * Checked beyond the line syntax: names and label names, label values' quoting
 * and escapes, numbers; HELP and TYPE at most once per family and before its
 * samples; samples of one family together; sample names that fit the family's
 * type (histogram: _bucket with le, _sum, _count); no duplicate series;
 * counters never negative; histogram buckets cumulative with +Inf = _count.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A value as Go's strconv.ParseFloat reads it (what the format specifies): NaN and Inf in any case (prom-client writes "Nan"). */
function parseValue(text: string, line: string): number {
  if (/^nan$/i.test(text)) return NaN;
  const inf = /^([-+]?)(inf|infinity)$/i.exec(text);
  if (inf) return inf[1] === '-' ? -Infinity : Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) badValue(text, line);
  return Number(text);
}

function badValue(text: string, line: string): never {
  throw new Error(`bad sample value ${JSON.stringify(text)} in: ${line}`);
}

/** Parses `{a="x",b="y"}` from `text` at `at` (just after the name); returns the labels and the index after `}`. */
function parseLabels(text: string, at: number, line: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = at + 1;
  const fail = (why: string): never => {
    throw new Error(`${why} at column ${i} in: ${line}`);
  };
  while (text[i] !== '}') {
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(text.slice(i));
    if (!m) fail('bad label name');
    const name = m![0];
    i += name.length;
    if (text[i] !== '=' || text[i + 1] !== '"') fail('expected ="');
    i += 2;
    let value = '';
    for (;;) {
      const c = text[i];
      if (c === undefined || c === '\n') fail('unterminated label value');
      if (c === '"') break;
      if (c === '\\') {
        const e = text[i + 1];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else fail(`bad escape \\${e}`);
        i += 2;
      } else {
        value += c;
        i++;
      }
    }
    i++;
    if (!LABEL_NAME.test(name) || name.startsWith('__')) fail(`reserved or bad label name ${name}`);
    if (name in labels) fail(`label ${name} twice`);
    labels[name] = value;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') fail('expected , or }');
  }
  return { labels, end: i + 1 };
}

/** The family a sample name belongs to, given the declared families. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const own = families.get(name);
  if (own) return own;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
  }
  return undefined;
}

/** Parses the whole text; throws on the first thing that is not well formed. */
export function parsePrometheusText(text: string): Map<string, Family> {
  if (text.length && !text.endsWith('\n')) throw new Error('the text does not end with a newline');
  const families = new Map<string, Family>();
  const finished = new Set<string>();
  const series = new Set<string>();
  const typed = new Set<string>();
  let current: Family | undefined;
  const declare = (name: string, line: string): Family => {
    if (!METRIC_NAME.test(name)) throw new Error(`bad metric name in: ${line}`);
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // another comment
      const [, what, name, rest] = m as unknown as [string, string, string, string];
      const f = declare(name, line);
      if (f.samples.length || finished.has(name)) throw new Error(`${what} after samples of ${name}: ${line}`);
      if (what === 'HELP') {
        if (f.help !== undefined) throw new Error(`second HELP of ${name}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`bad escape in HELP of ${name}`);
        f.help = rest;
      } else {
        if (!TYPES.has(rest)) throw new Error(`bad TYPE ${rest} of ${name}`);
        if (typed.has(name)) throw new Error(`second TYPE of ${name}`);
        typed.add(name);
        f.type = rest as Family['type'];
      }
      continue;
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) throw new Error(`not a sample line: ${line}`);
    const name = nameMatch[0];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i, line));
    const rest = line.slice(i);
    const vm = /^ (\S+)( -?\d+)?$/.exec(rest);
    if (!vm) throw new Error(`expected " value [timestamp]" after the labels in: ${line}`);
    const value = parseValue(vm[1]!, line);
    const f = familyOf(name, families) ?? declare(name, line);
    if (current && current !== f) finished.add(current.name);
    if (finished.has(f.name)) throw new Error(`samples of ${f.name} are not together: ${line}`);
    current = f;
    if (f.type === 'histogram') {
      if (name === f.name) throw new Error(`histogram ${f.name} has a sample without _bucket/_sum/_count: ${line}`);
      if (name.endsWith('_bucket') && !('le' in labels)) throw new Error(`bucket without le: ${line}`);
    }
    if (f.type === 'counter' && !(value >= 0)) throw new Error(`counter below 0 or NaN: ${line}`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new Error(`series twice: ${line}`);
    series.add(key);
    f.samples.push({ name, labels, value });
  }
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { buckets: [] }));
    if (s.name.endsWith('_bucket')) g.buckets.push([parseValue(le!, `le of ${f.name}`), s.value]);
    else if (s.name.endsWith('_count')) g.count = s.value;
  }
  for (const [key, g] of groups) {
    g.buckets.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < g.buckets.length; i++) {
      if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`${f.name}${key}: buckets are not cumulative`);
    }
    const inf = g.buckets.at(-1);
    if (!inf || inf[0] !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
    if (g.count !== inf[1]) throw new Error(`${f.name}${key}: _count ${g.count} is not the +Inf bucket ${inf[1]}`);
  }
}

/** The sum of the samples named `name` whose labels include `match`. */
export function total(families: Map<string, Family>, name: string, match: Record<string, string> = {}): number {
  let n = 0;
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value;
    }
  }
  return n;
}
