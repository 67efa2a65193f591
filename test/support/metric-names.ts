/** The metric families a server's render() must hold (issue 15), for the metrics and dashboard tests. */
import type { Family } from './prom-text.js';

/** Every family render() must hold, with its type. */
export const STOWAGE_METRICS: Record<string, Family['type']> = {
  stowage_rpc_requests_total: 'counter',
  stowage_rpc_duration_seconds: 'histogram',
  stowage_store_requests_total: 'counter',
  stowage_store_bytes_total: 'counter',
  stowage_tree_cache_hits_total: 'counter',
  stowage_tree_cache_misses_total: 'counter',
  stowage_chunk_cache_hits_total: 'counter',
  stowage_chunk_cache_misses_total: 'counter',
  stowage_chunk_cache_fetched_bytes_total: 'counter',
  stowage_chunk_cache_read_bytes_total: 'counter',
  stowage_dict_ops_total: 'counter',
  stowage_queue_ops_total: 'counter',
  stowage_queue_depth: 'gauge',
  stowage_bridge_calls_total: 'counter',
  stowage_bridge_attempts_requeued_total: 'counter',
  stowage_bridge_placements_total: 'counter',
  stowage_bridge_workers: 'gauge',
  stowage_bridge_running_calls: 'gauge',
  stowage_bridge_queued_calls: 'gauge',
  stowage_process_cpu_seconds_total: 'counter',
  stowage_process_resident_memory_bytes: 'gauge',
  stowage_nodejs_heap_size_used_bytes: 'gauge',
  stowage_nodejs_eventloop_lag_p99_seconds: 'gauge',
};
