/** A byte count as people read it, in binary units ("1.5 MiB"): the CLI's messages and the mount's commit reports. */
import prettyBytes from 'pretty-bytes';

export const bytes = (n: number): string => prettyBytes(n, { binary: true });
