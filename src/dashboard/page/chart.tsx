/**
 * A uPlot time-series chart as a Preact component. The uPlot instance is made
 * once per set of series and fed new data on every poll (setData), so a chart
 * does not flicker or lose its cursor when the view updates. Times on the x
 * axis are in seconds, as uPlot's time scale wants; callers pass milliseconds.
 */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  color: string;
  /** y values, one per x. */
  values: (number | null)[];
}

export interface ChartProps {
  /** Times of the points, ms since the epoch, ascending. */
  xsMs: number[];
  series: ChartSeries[];
  height?: number;
  /** Tick and legend text for y values. */
  yFormat?: (v: number) => string;
  /** A bare line without axes, legend or cursor, for a table cell. */
  sparkline?: boolean;
  /** Fixed y range (ratios: [0, 1]). */
  yRange?: [number, number];
  /** Tick spacings to choose from on the y axis (bytes: powers of two, so ticks read 512 KiB, 1 MiB). */
  yIncrs?: number[];
  /** Draw points as steps (totals that change at commits). */
  stepped?: boolean;
  testid?: string;
}

export function Chart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data: uPlot.AlignedData = [props.xsMs.map((t) => t / 1000), ...props.series.map((s) => s.values)];
  const shape = `${props.series.map((s) => s.label).join('\u0000')}|${props.sparkline}|${props.height}`;

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const fmt = props.yFormat ?? ((v: number) => String(v));
    const width = Math.max(el.clientWidth, props.sparkline ? 80 : 200);
    const opts: uPlot.Options = {
      width,
      height: props.height ?? (props.sparkline ? 32 : 180),
      legend: { show: !props.sparkline },
      cursor: props.sparkline ? { show: false } : { drag: { x: false, y: false } },
      select: { show: false, left: 0, top: 0, width: 0, height: 0 },
      scales: { x: { time: true }, y: props.yRange ? { range: props.yRange } : { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: props.sparkline
        ? [{ show: false }, { show: false }]
        : [
            { stroke: '#8b95a5', grid: { stroke: '#2a3140' }, ticks: { stroke: '#2a3140' }, space: 90 },
            { stroke: '#8b95a5', grid: { stroke: '#2a3140' }, ticks: { stroke: '#2a3140' }, size: 70, values: (_u, vals) => vals.map(fmt), incrs: props.yIncrs },
          ],
      series: [
        {},
        ...props.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: props.sparkline ? 1.5 : 2,
          fill: `${s.color}22`,
          paths: props.stepped ? uPlot.paths.stepped?.({ align: 1 }) : undefined,
          points: { show: props.stepped === true && !props.sparkline },
          value: (_u: uPlot, v: number | null) => (v === null ? '–' : fmt(v)),
        })),
      ],
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const resize = new ResizeObserver(() => {
      const w = Math.max(el.clientWidth, props.sparkline ? 80 : 200);
      if (w !== u.width) u.setSize({ width: w, height: u.height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // The chart is rebuilt only when its shape changes; data flows in below.
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  });

  return <div class={props.sparkline ? 'chart sparkline' : 'chart'} ref={box} data-testid={props.testid} />;
}
