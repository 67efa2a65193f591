/** Small pieces every view uses: the not-hosted note, the freshness line, empty rows. */
import type { ComponentChildren } from 'preact';
import { ago } from './format.js';
import type { Poll } from './poll.js';
import type { NotHosted } from '../api-types.js';

export function isNotHosted(answer: unknown): answer is NotHosted {
  return typeof answer === 'object' && answer !== null && 'hosted' in answer && answer.hosted === false;
}

/** The view's title, and how fresh its data is (or why it is not). */
export function ViewHead(props: { title: string; poll: Poll<unknown>; children?: ComponentChildren }) {
  const { error, updatedAt } = props.poll;
  return (
    <div class="view-head">
      <h1>{props.title}</h1>
      {props.children}
      <span class={error ? 'freshness stale' : 'freshness'} data-testid="freshness">
        {error ? `update failed: ${error}` : updatedAt ? `updated ${ago(updatedAt)}` : 'loading…'}
      </span>
    </div>
  );
}

export function NotHostedNote(props: { service: string }) {
  return (
    <p class="note" data-testid="not-hosted">
      This server does not host the {props.service} service (<code>stowage serve --only</code>).
    </p>
  );
}

/** A table row saying there is nothing to show, across `columns` columns. */
export function EmptyRow(props: { columns: number; text: string }) {
  return (
    <tr class="empty">
      <td colSpan={props.columns}>{props.text}</td>
    </tr>
  );
}

/** A number cell, right-aligned, with the exact value as a tooltip. */
export function Num(props: { children: ComponentChildren; title?: string; testid?: string }) {
  return (
    <td class="num" title={props.title} data-testid={props.testid}>
      {props.children}
    </td>
  );
}
