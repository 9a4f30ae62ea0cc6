// Package metrics is scattergather's observability plumbing: the Prometheus
// registry of a process, the vectors several roles share, the HTTP server of
// /metrics, /healthz and /readyz, the Kafka client metrics (franz-go's kprom,
// one set per client) and the consumer-lag sampler.
//
// The registry is built in main (here: internal/cli) and injected into each
// role's Config as a prometheus.Registerer; nil means no metrics. Nothing is
// registered on the default registry and nothing at init. When several roles
// (or several instances of one role) share a registry, as in `scattergather
// dev`, they share each vector, so a counter is the sum over the process.
//
// Usage:
//
//	reg := metrics.NewRegistry()
//	sc, err := scatterer.New(scatterer.Config{..., Metrics: reg,
//		Client: kafkaconfig.Client{..., NewHooks: metrics.KafkaHooks(reg, "scatterer")}})
//	srv, err := metrics.NewServer(metrics.ServerConfig{Addr: "127.0.0.1:9191", Gatherer: reg,
//		Ready: []metrics.Check{{Name: "scatterer", Ready: sc.Ready}}})
//	// run srv.Run(ctx), sc.Run(ctx) and a LagSampler's Run(ctx) side by side
//
// # Metrics
//
// Every name starts with scattergather_. Durations are in seconds; counters
// end in _total. Counters of pipeline work count what was committed (under
// exactly-once: in a committed transaction; under at-least-once: produced
// and its offsets committed), so an aborted batch that is consumed again is
// counted once. Histograms and gauges are observed with the commit too.
//
// Scatterer (package scatterer):
//
//	scattergather_requests_scattered_total{route}       requests split into tasks + a manifest
//	scattergather_tasks_produced_total{route}           task records written to tasks.<route>
//
// Processor (package processor):
//
//	scattergather_tasks_processed_total{route,recipient,status}  results written; status OK, ERROR or EXPIRED
//	scattergather_task_duration_seconds{route,recipient}         handler time of a task, all tries and backoff included
//	scattergather_task_retries_total{route,recipient}            handler retries
//	scattergather_handler_panics_total{route,recipient}          handler panics recovered
//	scattergather_processor_unknown_recipient_tasks_total{route,recipient}  broadcast tasks skipped, no result: the route's recipients (sg-recipients header) lack the processor's; counted as read
//
// Aggregator (package aggregator):
//
//	scattergather_manifests_received_total         manifests consumed
//	scattergather_results_received_total           results consumed
//	scattergather_results_duplicate_total          results for a part that had one (and repeated manifests)
//	scattergather_results_late_total               results for a request already replied to
//	scattergather_results_orphaned_total           results whose manifest never came, or came expired (dead-lettered)
//	scattergather_manifests_expired_total          manifests read past their deadline plus the late window (dead-lettered)
//	scattergather_open_requests                    gauge: requests gathering
//	scattergather_held_results                     gauge: results waiting for their manifest
//	scattergather_aggregator_fetch_paused          gauge: instances that paused fetching results at --max-open-requests
//	scattergather_aggregator_fetch_pauses_total    times an instance paused fetching results at --max-open-requests
//	scattergather_state_restore_duration_seconds   time to restore a partition's state on assignment
//	scattergather_hedges_total{outcome}            hedged tasks: issued, denied (by the route's budget),
//	                                               won (the hedge answered the part first)
//
// Shared by several roles (this package):
//
//	scattergather_replies_total{route,outcome}               replies written; outcome COMPLETE, PARTIAL or FAILED
//	                                                         (the aggregator's, and the scatterer's FAILED answers
//	                                                         to rejected requests)
//	scattergather_request_duration_seconds{route,outcome}    from the request's submitted-at to its reply's commit
//	scattergather_dead_letters_total{role,reason}            records written to the dlq topic
//	scattergather_batches_aborted_total{role}                batches not committed (rebalance, shutdown, produce
//	                                                         failure); their records are consumed again
//	scattergather_hop_restarts_total{group}                  Kafka clients a role closed and built again after an
//	                                                         error it recovers from (producer fenced, member removed
//	                                                         from its group; internal/kafka.Hop)
//	scattergather_records_rejected_total{group,reason}       output records Kafka refused for good (unknown-topic,
//	                                                         topic-authorization-failed, record-too-large,
//	                                                         invalid-record), each written as a dead letter instead
//	scattergather_consumer_lag{group,topic,partition}        records behind the end offset, sampled (LagSampler)
//	scattergather_consumer_lag_sample_errors_total{group}    failed lag samples
//	scattergather_ready{check}                               1 when the named readiness check passes (Server)
//
// Route labels only take configured route names; a request for an unknown
// route is counted under route="_unknown", so a caller cannot grow the
// label set.
//
// Kafka clients (franz-go's plugin/kprom, one set per client, with the
// labels role and client, the client's number within the process; broker
// metrics also by node_id, produce and fetch metrics by node_id and topic):
// scattergather_kafka_connects_total, _connect_errors_total,
// _disconnects_total, _write_bytes_total, _write_errors_total,
// _read_bytes_total, _read_errors_total, _produce_bytes_total,
// _produce_records_total, _produce_batches_total, _fetch_bytes_total,
// _fetch_records_total, _fetch_batches_total (uncompressed bytes), the
// histogram _request_duration_e2e_seconds, and the gauges
// _buffered_produce_records_total, _buffered_produce_bytes,
// _buffered_fetch_records_total, _buffered_fetch_bytes. kprom also
// registers, and leaves empty, _produce_compressed_bytes_total,
// _fetch_compressed_bytes_total, _read_wait_seconds, _read_time_seconds,
// _write_wait_seconds, _write_time_seconds and _request_throttled_seconds.
//
// Process: the Go runtime (go_*), the process (process_*) and go_build_info.
package metrics
