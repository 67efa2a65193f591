/**
 * Live updates. The shown view polls its own endpoint every 2 s with fetch.
 *
 * Why polling and not server-sent events: EventSource cannot send an
 * Authorization header, so SSE would need the token in the URL (query string),
 * where it lands in access logs, proxies and the browser's history. fetch
 * carries the header. Each view's answer is one small JSON document (at most a
 * few hundred rows), so one request per 2 s for the one view on screen costs
 * little; a hidden tab does not poll, and one request is in flight at a time
 * (the next is scheduled when the last has answered, so a slow server is never
 * piled on).
 */
import { useEffect, useState } from 'preact/hooks';
import { Unauthorized, api } from './api.js';

export const POLL_INTERVAL_MS = 2000;

export interface Poll<T> {
  /** The last answer for this path (kept while a later request fails). */
  data: T | undefined;
  /** What went wrong with the last request, if it failed. */
  error: string | null;
  /** When the last answer came. */
  updatedAt: number | null;
}

interface State<T> extends Poll<T> {
  path: string | null;
}

/**
 * Polls GET `path` every intervalMs (null: fetch once, for answers that never
 * change, such as the files of one version; tried again every 2 s while it
 * fails). A null path fetches nothing.
 */
export function usePoll<T>(path: string | null, intervalMs: number | null = POLL_INTERVAL_MS): Poll<T> {
  const [state, setState] = useState<State<T>>({ path, data: undefined, error: null, updatedAt: null });
  useEffect(() => {
    if (path === null) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const abort = new AbortController();
    /** The next request: after intervalMs when polling; once-only answers are asked again only after a failure. */
    const schedule = (failed = false) => {
      const wait = intervalMs ?? (failed ? POLL_INTERVAL_MS : null);
      if (!stopped && wait !== null) timer = setTimeout(() => void tick(), wait);
    };
    const tick = async () => {
      if (document.hidden && intervalMs !== null) return schedule();
      try {
        const data = await api<T>(path, { signal: abort.signal });
        if (!stopped) setState({ path, data, error: null, updatedAt: Date.now() });
      } catch (e) {
        // A 401 has already sent the page back to the login form; stop here.
        if (stopped || e instanceof Unauthorized || abort.signal.aborted) return;
        const error = e instanceof Error ? e.message : String(e);
        setState((s) => ({ ...s, path, error }));
        return schedule(true);
      }
      schedule();
    };
    const onVisible = () => {
      if (!document.hidden && timer !== undefined) {
        clearTimeout(timer);
        void tick();
      }
    };
    document.addEventListener('visibilitychange', onVisible);
    void tick();
    return () => {
      stopped = true;
      abort.abort();
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [path, intervalMs]);
  // Answers for another path (the view moved on) are not this path's data.
  return state.path === path ? state : { data: undefined, error: null, updatedAt: null };
}
