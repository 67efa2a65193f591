/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    // Not a WHATWG URL (e.g. redis://user:pass@h1:p1,h2:p2, a Cluster's seeds): hide what sits between ':' and '@'.
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
  }
}
