// Package processor is the middle of scatter-gather: it consumes the tasks of
// one route, runs a [Handler] on each and writes one [schemas.Result] per
// task to the results topic, keyed by correlation id, for the aggregator.
//
// Usage:
//
//	lookup := processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
//		return searchMyShard(ctx, t.PartID, t.Payload) // your code
//	})
//	p, err := processor.New(processor.Config{
//		Role:  kafkaconfig.Role{Client: kafkaconfig.Client{Brokers: []string{"localhost:9092"}}},
//		Route: "search",
//	}, processor.Chain(lookup, processor.Timeout(200*time.Millisecond)))
//	if err != nil {
//		return err
//	}
//	return p.Run(ctx) // until ctx ends
//
// The built-in handlers are general: [Echo], [Sleep] (a tunable latency)
// and [HTTP] (call a service). [Middleware]s wrap a handler, the Watermill
// way: [Timeout], [Retry] and [Recover] are the processor's own, and it
// wraps every handler in the task's deadline, [Retry] (Config.Retries,
// Backoff, MaxBackoff) and [Recover].
//
// Every task gets an answer the aggregator sees, so that no failure goes
// unnoticed (the seed's "not noticing an error in a processor"):
//
//   - OK: the handler returned a payload.
//   - ERROR: the handler failed, after Retries retries with exponential
//     backoff and jitter, at once for a [Permanent] error or a panic, or
//     earlier when the next retry would start past the task's deadline.
//   - EXPIRED: the task's deadline had passed when it was picked up (the
//     handler is not called), or the handler failed because its context hit
//     the deadline. A handler that ignores its context and succeeds late
//     still answers OK; the aggregator, which owns the deadline, decides.
//
// A record that is not a task (garbage, an unknown schema, another record
// kind) or a broadcast task reaching a processor without a Recipient is
// copied to the dead-letter topic with its reason (header sg-dlq-reason:
// not-avro, unknown-schema, wrong-schema, malformed, no-part-id); the
// pipeline goes on.
//
// Split and broadcast routes: on a split route all processors of the route
// share one consumer group and each task names its part (the shard). On a
// broadcast route each recipient runs its own group (Config.Recipient), all
// of them get every task, and each answers as its recipient.
//
// A recipient the route does not have (a misspelt one, or one the
// scatterer's route table does not list yet) would answer every task as a
// part no manifest expects, which the aggregator only dead-letters. The
// scatterer lists the route's recipients on each broadcast task (record
// header sg-recipients); a processor whose Recipient is not among them
// writes no result for the task, counts it (Stats.UnknownRecipient,
// scattergather_processor_unknown_recipient_tasks_total) and logs one
// warning naming its recipient and the route's. Tasks without the header
// (from an older scatterer) are answered as before. The processor command,
// which has the route table, refuses such a --recipient at start.
//
// Concurrency: with Config.Concurrency 1 (the default), Run handles each
// polled batch with one goroutine per partition, records of a partition in
// order, and waits for them before it commits the batch: results and
// consumed offsets in one transaction under exactly-once, offsets after the
// results are acknowledged under at-least-once. A batch is then as slow as
// its slowest task, and the parallelism is the number of partitions.
//
// With Concurrency N above 1 the processor pipelines, after Confluent's
// Parallel Consumer: it keeps polling while tasks run and handles up to N
// tasks of each partition at once. Config.Ordering decides which tasks wait
// for each other: OrderKey (default) runs the tasks of one record key in
// offset order, one at a time, and different keys in parallel; OrderNone
// runs any. Each result is written as soon as its task is done (a finished
// task wakes the poll), in a transaction that commits each partition up to
// its first unfinished task and names the finished tasks above that offset
// in the commit's metadata (the "done set"). An instance that takes a
// partition over reads the done set back and skips those tasks, so a slow
// task holds back its partition's committed offset but no other task's
// result, and exactly-once still holds: no task's result is committed
// twice. A partition whose uncommitted tasks reach 8 × N (at least 256) is
// paused until they fall to half of that. Under exactly-once, two
// transactions are at least Config.CommitInterval (2ms) apart: back to
// back, Kafka 4.x holds a transaction's first produce 20ms while the last
// one's markers are written (every hop also waits
// kafkaconfig.Role.TransactionGap before its poll). A poll that brings records but no finished task
// commits nothing (the hop defers the batch). A transaction the broker aborts
// (seen on Kafka 4.4 when one begins as the last one ends) loses only its
// output: the tasks in flight go on, and their results go with a later
// transaction, once the client has polled their partition again (it goes
// back to the committed offsets after an abort, and commits no offset of
// a partition it has not polled since). The trade-off: more transactions
// (one per wake-up rather than per batch), and after a
// crash the tasks in flight are handled again, as with batches.
//
// On shutdown the tasks in flight get Config.DrainTimeout; tasks still
// running then are not answered but consumed again by the next owner of
// their partition, so a stopping processor never reports a failure it did
// not have.
//
// [Processor.Stats] exposes the counters (results by status, retries,
// panics, dead letters, aborted batches) that metrics are built from.
package processor
