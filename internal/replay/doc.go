// Package replay re-runs history through the pipeline: it re-submits a range
// of a requests topic ([Replayer]), compares the replies of a replay with the
// originals ([Compare]), and moves a consumer group's offsets for in-place
// reprocessing ([PlanGroupReset]). The commands `scattergather replay`,
// `replay compare` and `groups reset` are thin layers over it; docs/replay.md
// explains when to use which.
//
// Usage:
//
//	from, _ := replay.ParseBound("2h") // two hours ago
//	r, err := replay.New(replay.Config{
//		Client: kafkaconfig.Client{Brokers: brokers},
//		Source: kafkaconfig.Topics{Prefix: "sg."},
//		Target: kafkaconfig.Topics{Prefix: "shadow."}, // a shadow pipeline; omit for in place
//		From:   &from,
//	})
//	...
//	err = r.Run(ctx) // resumable: run again with r.RunID() after a crash
//	...
//	report, err := replay.Compare(ctx, replay.CompareConfig{
//		Client: cc, Source: kafkaconfig.Topics{Prefix: "sg."}, Target: kafkaconfig.Topics{Prefix: "shadow."},
//		RunID: r.RunID(), JSON: true,
//	})
//
// # Ranges
//
// A range [from, to) is resolved once, when a run is created, to offsets
// per partition ([ResolveRange]): a time with ListOffsets (the first offset
// whose record timestamp is at or after it), earliest to the log start,
// latest (and "now") to the last stable offset, and every end is clamped to
// the last stable offset, so a range never waits for open transactions. The
// resolved offsets are stored with the run, so a run resumed hours later
// replays the same records. Ranges are offsets: with producer-set
// timestamps that are not in offset order, a time range is as exact as
// Kafka's ListOffsets.
//
// # A replayed request
//
// Each request in the range (control records, undecodable records, requests
// of other routes than Config.Routes and, unless Config.IncludeReplays,
// requests that are themselves replays are skipped and counted) is
// re-submitted to the target requests topic with
//
//   - a new correlation id, [ReplayID]: "rp-<run>-<partition>-<offset>",
//     deterministic, so a record can never be replayed under two ids;
//   - Request.ReplayOf = the original's correlation id (the scatterer copies
//     it to the manifest and the aggregator to Reply.ReplayOf) and
//     Request.ReplayRun = the run id;
//   - submitted-at = now and the original's relative timeout, so the
//     deadline is set afresh;
//   - the original's headers plus sg-replay-of, sg-replay-run,
//     sg-original-submitted-at, sg-original-timeout-ms and
//     sg-original-source (see the Header constants), which reach every task
//     and the manifest;
//   - no reply-to: replies go to the target's replies topic.
//
// # Exactly once, resumable
//
// The run's producer is transactional, its transactional id derived from
// the run id ([TransactionalID]). Each batch of replayed requests (at most
// Config.BatchSize) is committed in one transaction together with the run's
// [RunState] on the compacted [CheckpointTopic], keyed by run id. A session
// starts by initialising its producer id, which fences every earlier session
// of the run and aborts the transaction it left open, and only then reads
// the checkpoint: what is committed is exactly what the checkpoint says,
// so resuming neither submits a request twice nor skips one. Consumers of
// the target (the scatterer) read committed, so they never see a batch that
// was aborted.
//
// # Concurrency
//
// A Replayer is used from one goroutine; Run owns its clients and closes
// them before it returns. Compare and the group reset functions are safe to
// call concurrently.
package replay
