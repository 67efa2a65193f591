/**
 * The dashboard: a login form until the token is accepted, then one view at a
 * time chosen by the URL's hash (#/volumes, #/volumes/NAME, #/dicts, #/bridge,
 * #/mounts), each polling its own endpoint (poll.ts says why polling). Any 401
 * forgets the token and shows the login form again.
 */
import { useEffect, useState } from 'preact/hooks';
import { Unauthorized, api, forgetToken, onUnauthorized, savedToken } from './api.js';
import { BridgeView } from './bridge.js';
import { DictsView } from './dicts.js';
import { ago } from './format.js';
import { Login } from './login.js';
import { MountsView } from './mounts.js';
import type { WhoAmI } from '../api-types.js';
import { VolumeView } from './volume.js';
import { VolumesView } from './volumes.js';

type Route = { view: 'volumes' } | { view: 'volume'; name: string } | { view: 'dicts' } | { view: 'bridge' } | { view: 'mounts' };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/');
  switch (parts[0]) {
    case 'volumes':
      if (parts[1]) {
        try {
          return { view: 'volume', name: decodeURIComponent(parts.slice(1).join('/')) };
        } catch {
          return { view: 'volumes' };
        }
      }
      return { view: 'volumes' };
    case 'dicts':
      return { view: 'dicts' };
    case 'bridge':
      return { view: 'bridge' };
    case 'mounts':
      return { view: 'mounts' };
    default:
      return { view: 'volumes' };
  }
}

function useRoute(): Route {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const onChange = () => setHash(location.hash);
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return parseRoute(hash);
}

type Auth = { state: 'checking' } | { state: 'out'; note: string | null } | { state: 'in'; who: WhoAmI };

export function App() {
  const [auth, setAuth] = useState<Auth>(() => (savedToken() ? { state: 'checking' } : { state: 'out', note: null }));
  const route = useRoute();

  useEffect(
    () =>
      onUnauthorized(() => {
        forgetToken();
        setAuth((a) => (a.state === 'out' ? a : { state: 'out', note: 'The server refused the token: log in again.' }));
      }),
    [],
  );
  useEffect(() => {
    if (auth.state !== 'checking') return;
    api<WhoAmI>('/api/whoami').then(
      (who) => setAuth({ state: 'in', who }),
      (e: unknown) => setAuth({ state: 'out', note: e instanceof Unauthorized ? null : e instanceof Error ? e.message : String(e) }),
    );
  }, [auth.state]);

  if (auth.state === 'checking') return <main class="login muted">checking the token…</main>;
  if (auth.state === 'out') return <Login note={auth.note} onLogin={(who) => setAuth({ state: 'in', who })} />;

  const { server } = auth.who;
  const tab = route.view === 'volume' ? 'volumes' : route.view;
  const logout = () => {
    forgetToken();
    setAuth({ state: 'out', note: 'Logged out.' });
  };
  return (
    <div class="shell">
      <header>
        <span class="brand">stowage</span>
        <nav>
          {(['volumes', 'dicts', 'bridge', 'mounts'] as const).map((v) => (
            <a key={v} href={`#/${v}`} class={tab === v ? 'active' : ''} data-testid={`nav-${v}`}>
              {{ volumes: 'Volumes', dicts: 'Dicts & queues', bridge: 'Bridge', mounts: 'Mounts & workers' }[v]}
            </a>
          ))}
        </nav>
        <span class="server" data-testid="server-info" title={`store: ${server.store}\nstate: ${server.state}\nservices: ${server.services.join(', ')}`}>
          {server.address} · v{server.version} · up {ago(server.startedAtMs).replace(' ago', '')}
        </span>
        <button type="button" onClick={logout} data-testid="logout">
          log out
        </button>
      </header>
      <main>
        {route.view === 'volumes' && <VolumesView />}
        {route.view === 'volume' && <VolumeView key={route.name} name={route.name} />}
        {route.view === 'dicts' && <DictsView />}
        {route.view === 'bridge' && <BridgeView />}
        {route.view === 'mounts' && <MountsView />}
      </main>
    </div>
  );
}
