/**
 * SDK internals for stowage's own tooling (the CLI's `run`/`deploy` and the
 * worker), kept out of the public export list in index.ts.
 */
export { bundleModule, uploadBundle, DEFAULT_CODE_VOLUME, type Bundle } from './bundle.js';
export { checkExport, functionSpec, retryPolicyOf } from './app.js';
export { callError, submitCalls, valueOf, watchResults } from './invoke.js';
export { volumeFields } from './function-volumes.js';
