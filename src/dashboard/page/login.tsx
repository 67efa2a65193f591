/**
 * The login form: the only thing shown without a valid token. The token is
 * checked with GET /api/whoami before it is kept (in sessionStorage).
 */
import { useState } from 'preact/hooks';
import { Unauthorized, api, saveToken } from './api.js';
import type { WhoAmI } from '../api-types.js';

export function Login(props: { note: string | null; onLogin: (who: WhoAmI) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError('paste the token first');
    setBusy(true);
    setError(null);
    try {
      const who = await api<WhoAmI>('/api/whoami', { token: t });
      saveToken(t);
      props.onLogin(who);
    } catch (err) {
      setError(err instanceof Unauthorized ? 'wrong token' : err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="login" data-testid="login">
      <form onSubmit={(e) => void submit(e)}>
        <h1>stowage</h1>
        <p class="muted">
          Paste the server's token: <code>&lt;data-dir&gt;/token</code> on the server's host. It is kept in this tab only.
        </p>
        {props.note && !error && <p class="note">{props.note}</p>}
        <label>
          token
          <input
            type="password"
            autocomplete="off"
            spellcheck={false}
            value={token}
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
            data-testid="token-input"
            autofocus
          />
        </label>
        <button type="submit" disabled={busy} data-testid="login-submit">
          {busy ? 'checking…' : 'log in'}
        </button>
        {error && (
          <p class="error" data-testid="login-error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
