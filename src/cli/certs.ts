/** `stowage certs create`: a CA and server (and client) certificates for a private cluster (see src/server/certs.ts). */
import type { Command } from 'commander';
import { relative } from 'node:path';
import { DEFAULT_PORT } from '../common/config.js';
import { integerArg } from './values.js';

interface CreateFlags {
  dir: string;
  host?: string[];
  days: string;
  client?: string;
  force?: boolean;
}

export function register(program: Command): void {
  const certs = program.command('certs').description('TLS certificates for a private cluster');
  certs
    .command('create')
    .description('write a self-signed CA, a server certificate signed by it and (with --client) a client certificate')
    .requiredOption('--dir <dir>', 'where to write ca.pem, ca-key.pem, server.pem, server-key.pem (client.pem, client-key.pem)')
    .option('--host <name...>', 'a DNS name or IP address clients reach the server by (repeatable); localhost and 127.0.0.1 are always in')
    .option('--days <n>', 'days the certificates are valid', '365')
    .option('--client <name>', 'also write client.pem and client-key.pem with this name, for mutual TLS (--tls-client-ca)')
    .option('--force', 'replace files that exist')
    .action(async (flags: CreateFlags) => {
      const days = integerArg('--days', flags.days, 1, 100 * 365)!;
      const { createCerts } = await import('../server/certs.js');
      const files = createCerts({ dir: flags.dir, hosts: flags.host ?? [], days, client: flags.client, force: flags.force });
      for (const f of files) console.log(`wrote ${f.path} (${f.mode.toString(8).padStart(4, '0')}): ${f.what}`);
      const at = (name: string) => {
        const p = files.find((f) => f.path.endsWith(`/${name}`) || f.path === name)!.path;
        const r = relative(process.cwd(), p);
        return r.startsWith('..') ? p : r;
      };
      const host = flags.host?.[0] ?? '127.0.0.1';
      const mutual = flags.client !== undefined;
      console.log('');
      console.log('run the server with:');
      console.log(
        // Without --host the certificate names only this host: other hosts could not check it.
        `  stowage serve${flags.host?.length ? ' --host 0.0.0.0' : ''} --tls-cert ${at('server.pem')} --tls-key ${at('server-key.pem')}` +
          (mutual ? ` --tls-client-ca ${at('ca.pem')}` : ''),
      );
      console.log('point clients (CLI, SDK, stowage mount, stowage worker) at it with:');
      console.log(
        `  export STOWAGE_SERVER=${host.includes(':') ? `[${host}]` : host}:${DEFAULT_PORT} STOWAGE_TLS_CA=${at('ca.pem')}` +
          (mutual ? ` STOWAGE_TLS_CLIENT_CERT=${at('client.pem')} STOWAGE_TLS_CLIENT_KEY=${at('client-key.pem')}` : ''),
      );
      console.log(`  (or: stowage --tls-ca ${at('ca.pem')}${mutual ? ` --tls-client-cert ${at('client.pem')} --tls-client-key ${at('client-key.pem')}` : ''} …)`);
    });
}
