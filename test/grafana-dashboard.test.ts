/**
 * grafana/stowage.json (issue 15): an importable dashboard (schemaVersion >= 36,
 * a ${DS_PROMETHEUS} datasource input) whose every PromQL expression names
 * only series that Metrics.render() produces, and that shows every stowage
 * metric somewhere.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../src/common/metrics.js';
import { STOWAGE_METRICS } from './support/metric-names.js';
import { ROOT } from './support/processes.js';
import { parsePrometheusText } from './support/prom-text.js';

interface Target {
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: Target[];
}
interface Dashboard {
  schemaVersion: number;
  __inputs: { name: string; type: string; pluginId: string }[];
  panels: Panel[];
  templating: { list: { query: { query: string } }[] };
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless', 'inf', 'nan']);

/** The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names or strings. */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings (label values, regexes)
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names: string[] = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = bare.slice(m.index + m[0].length).trimStart();
    if (after.startsWith('(')) continue; // a function or aggregation
    if (PROMQL_WORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

/** Every series name render() can produce (a histogram's _bucket, _sum and _count). */
async function producedNames(): Promise<Set<string>> {
  const families = parsePrometheusText(await new Metrics().render());
  const names = new Set<string>();
  for (const f of families.values()) {
    if (f.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(f.name + s);
    else if (f.type === 'summary') for (const s of ['', '_sum', '_count']) names.add(f.name + s);
    else names.add(f.name);
  }
  return names;
}

describe('grafana/stowage.json', () => {
  const dashboard = JSON.parse(readFileSync(join(ROOT, 'grafana', 'stowage.json'), 'utf8')) as Dashboard;

  it('reads the names out of PromQL as the check below needs', () => {
    expect(metricNames('histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{x="y",m!~"S|W"}[$__rate_interval])))')).toEqual(['a_bucket']);
    expect(metricNames('sum(rate(a_total{code!="OK"}[5m])) / sum without (code) (b) + 1 - topk(20, c{q="by (x)"})')).toEqual(['a_total', 'b', 'c']);
  });

  it('is importable: schemaVersion >= 36 and every panel on the ${DS_PROMETHEUS} input', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.__inputs).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }));
    const graphs = dashboard.panels.filter((p) => p.type !== 'row');
    expect(graphs.length).toBeGreaterThanOrEqual(15);
    for (const p of graphs) {
      expect(p.datasource?.uid, p.title).toBe('${DS_PROMETHEUS}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) expect(t.datasource?.uid, p.title).toBe('${DS_PROMETHEUS}');
    }
  });

  it('names only series that render() produces, and shows every stowage metric', async () => {
    const produced = await producedNames();
    const used = new Set<string>();
    const exprs = [
      ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: p.title, expr: t.expr }))),
      ...dashboard.templating.list.map((v) => ({ where: 'a template variable', expr: v.query.query.replace(/^label_values\((\w+),.*$/, '$1') })),
    ];
    for (const { where, expr } of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${where}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) {
        expect(produced.has(n), `${where}: ${n} is not in render()`).toBe(true);
        used.add(n.replace(/_(bucket|sum|count)$/, ''));
      }
    }
    for (const name of Object.keys(STOWAGE_METRICS)) expect(used.has(name), `no panel shows ${name}`).toBe(true);
  });
});
