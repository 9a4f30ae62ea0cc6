// Package aggregator gathers the results of scattered requests by
// correlation id and writes exactly one reply per request: when the
// request's completion policy is met, or when its deadline passes.
//
// Usage:
//
//	topk, err := aggregator.TopK("score", 10, "id")
//	...
//	agg, err := aggregator.New(aggregator.Config{
//		Role: kafkaconfig.Role{
//			Client: kafkaconfig.Client{Brokers: brokers},
//			Topics: kafkaconfig.Topics{Prefix: "sg."},
//			Logger: logger,
//		},
//		Merges: map[schemas.Route]aggregator.Merge{"search": topk},
//	})
//	...
//	err = agg.Run(ctx) // blocks until ctx is done
//
// # What it consumes and produces
//
// The scatterer writes a [schemas.Manifest] per request and processors
// write a [schemas.Result] per part, all to the results topic keyed by the
// correlation id, so every record of a request is on one partition. The
// aggregator tells them apart by their schema fingerprint
// ([schemas.KindOf]). It writes a [schemas.Reply] keyed by the correlation
// id, with the header sg-type: reply, to the manifest's reply-to topic (the
// replies topic by default), and dead-letters to the DLQ topic, with a
// reason header:
//
//   - the DecodeError reason ("not-avro", "unknown-schema", "malformed",
//     ...) for a record that does not decode, "wrong-schema" for a record
//     of another kind;
//   - "key-mismatch" for a record not keyed by its correlation id;
//   - "bad-manifest" for a manifest without parts, with an empty or
//     repeated part id, or with a policy [ParsePolicy] rejects or a quorum
//     larger than its parts;
//   - "unknown-part" for a result for a part its manifest does not list;
//   - "orphan-result" for a result whose manifest did not come by the
//     result's task deadline plus one second;
//   - "manifest-expired" for a manifest read past its deadline plus
//     LateWindow, and for the results held for it (see Replies);
//   - "bad-hedge" for a hedge template whose settings do not parse.
//
// On a hedged route the scatterer also writes hedge templates to the
// results topic (see Hedged tasks below), and the aggregator writes hedged
// tasks to tasks.<route>.
//
// # Replies
//
// Every expected part gets a marker in manifest order: OK, ERROR or
// EXPIRED (with the result's error text), MISSING (no result by the
// deadline) or SKIPPED (the policy completed the request before it was
// needed), with the processor id, the attempt and the latency from the
// request's submission to the result's arrival here. The reply is COMPLETE
// when every part is OK or SKIPPED, FAILED when no part is OK, PARTIAL
// otherwise; when not COMPLETE, Reply.Error names the parts that are not OK
// ("2 of 8 parts not OK: shard-3 MISSING, shard-5 ERROR (timeout)"). The
// payload is the route's [Merge] of the OK parts ([Collect] by default). A
// merge that fails makes the reply FAILED, with "merge: <error>" in
// Reply.Error and no payload: there is nothing a client could use.
//
// A second result for a part is a duplicate: counted and dropped, except
// that an OK replaces an ERROR or EXPIRED result (a retry or hedge
// succeeded). So the first OK wins. After the reply, the request is
// remembered until LateWindow after its deadline (after the reply, when
// that came at or past the deadline): results for it are counted as late
// and dropped, a second manifest is counted as a duplicate; never a second
// reply. A result that comes before its manifest is held until the manifest
// comes, then used.
//
// A manifest read when its deadline plus LateWindow has passed is
// dead-lettered ("manifest-expired", counted in Stats.ManifestsExpired),
// with any results held for it, and never answered: its request was
// answered and forgotten (its records read again by a reset of the
// scatterer's or the aggregator's group past the late window, see
// docs/replay.md), or it comes so late (an outage longer than the late
// window) that no caller waits for it. Together the two rules mean that no
// manifest read a second time, however late, is answered a second time.
// Deadlines are set by the scatterer's clock and compared with the
// aggregator's: a clock skew shorter than LateWindow cannot make a manifest
// within its deadline expire.
//
// # Hedged tasks
//
// A request of a hedged split route (scatterer.Hedge) comes with hedge
// templates: Task records after its manifest, with the route's settings in
// their sg-hedge header ([ParseHedge]). At the request's hedge time (its
// submission plus the route's delay: fixed, or the percentile of the
// latencies of first attempts seen on the route, never below the floor,
// once enough are known) every part without a result is re-issued once:
// the template with the part's id and attempt 2, keyed by the part, to the
// partition of tasks.<route> after the one its key maps to, so that
// another processor than the slow one gets it. A token bucket per route
// caps hedges: each task of a hedged request earns Budget tokens (up to
// max(1, 1000 × Budget)), each hedge costs one; a hedge without a token is
// denied, and tried again every hedge delay while its part is missing, so
// that the tokens go to the parts that stay missing. The first result of a part wins, as above; the reply marks the
// part with the attempt that answered and lists the hedged parts in its
// [HeaderHedged] header. [Stats] counts hedges issued, denied and won.
// Templates and the fact that the hedge fired (with the slots it
// re-issued) are in the changelog, so a restored request hedges at its
// time and never twice; the latencies and the budget are in memory only:
// after a restore the adaptive delay waits for new latencies (the fixed
// delay, if any, meanwhile) and the budget starts with the tokens of the
// restored hedged requests.
//
// # Time
//
// Deadlines (and hedge times) are wall-clock times, with or without
// records: the hop returns from polling when the earliest timer is due (an
// alarm wakes it) and at least every Config.Tick, so a deadline fires on
// time on an idle partition too (Kafka Streams' stream-time punctuation
// would stall there).
//
// A deadline is a promise about the results produced before it, not about
// what this consumer has read by then: a timer due at T fires only once
// its partition has been read up to T, that is once a record created at T
// or later was read, or once the partition was read to the end of its last
// fetch and a fetch the client sent at T or later has come back (a poll
// found the client's buffer drained, and another did 10ms later). On an
// idle partition that is 10ms after T. An instance that has fallen behind
// (a slow batch, a pause, a backlog after a fault) thus reads what was
// committed before the deadline first; each due timer waits at most a
// second (behindMax, from when the partition's timers began to wait or
// from its own due time, whichever is later) and then fires with what was
// read, and Stats.CatchUpsExpired counts those waits. While fetching is
// paused (MaxOpenRequests) nothing more is read, and timers fire when due. docs/guarantees.md has the rule
// and where it is weaker. A manifest whose deadline has passed completes
// in the batch that brings it, or, when the results behind it are not read
// yet, once they are.
//
// # Backpressure
//
// Config.MaxOpenRequests bounds the requests an instance gathers at once.
// When its open requests reach it, the aggregator pauses fetching the
// results topic; deadlines keep firing while paused (the poll still ends at
// the tick or the earliest timer), and fetching resumes once the open
// requests are down to 90% of the limit. Since a batch takes at most
// Config.MaxPollRecords records and is applied whole, an instance holds at
// most MaxOpenRequests - 1 + MaxPollRecords open requests, plus the open
// requests a partition assignment restores. The decision is taken after
// every batch and every assignment or revocation, so a pause never
// outlives the requests it was for. Manifests and results share the
// topic: while paused, open requests complete at their deadlines.
// [Stats] has Open, OpenPeak, Paused and Pauses; docs/DESIGN.md
// ("Limits and backpressure") the rest.
//
// # State, batches and aborts
//
// State is kept per partition of the results topic: a map from correlation
// id to the request, and a min-heap of timers. It is created when a
// partition is assigned and dropped when it is revoked or lost. Each batch
// (one Kafka transaction under exactly-once) is applied with an undo log:
// before the batch first changes a request it saves a copy of it (or notes
// its absence), and slots are saved as they change. If the batch does not
// commit, its records will be consumed again, so every change is undone,
// completions included: the reply was never written, and the request is
// open again. Counters in [Stats] count committed batches only.
//
// Every change to a request is one of eight mutations, each a function of
// the state machine (state.go, hedge.go): open (the manifest came), hold
// (a result came before it), record (a part has a result), complete
// (replied; only the id and the end of the late window stay), expire (held
// results dead-lettered: their manifest never came, or came expired),
// forget (the late window passed), template (a hedge template came) and
// hedge (the hedge fired).
//
// # Durable state: the changelog
//
// The state lives on in the changelog, the compacted topic
// kafkaconfig.Topics.State() (aggregator-state), co-partitioned with results:
// the entries of a request are on the partition number of its results, so
// whoever owns a results partition owns its changelog partition. Entries
// are [schemas.AggregationState] records (changelog.go), written at the
// end of each batch, per partition:
//
//   - a done-list (key: [schemas.AppendDoneListKey]): the requests the
//     batch completed, each with its reply time and the end of its late
//     window; one record for all of them;
//   - open (key: the correlation id): the manifest and every part that has
//     a result, rewritten for each batch in which the request changed and
//     stays open;
//   - held (key: [schemas.AppendHeldKey]): a result that came before its
//     manifest, as the record consumed, so that it can still be
//     dead-lettered as it was;
//   - on hedged routes, held entries of an open request: its hedge
//     templates (under their offsets, the hedge time as arrived_at) and,
//     once the hedge fired, a mark under offset -1 naming the re-issued
//     slots, written again when a later try re-issues more (see Hedged
//     tasks).
//
// A request that opens and completes within one batch writes nothing but
// its line in the done-list. When a request ends its open entry (if one
// was written) and its held entries are deleted (tombstones); a done-list
// is deleted when the last request it lists is forgotten, so compaction
// keeps nothing of forgotten requests. The previous release wrote a part
// entry per result ([schemas.AppendPartKey]) and a done entry per request
// under its id; a restore reads them, and deletes them when their request
// ends or is forgotten.
//
// The records are derived from the undo log at the end of each batch (the
// requests it lists are exactly those the batch changed, with their state
// before it) and written with the batch (the hop's Batch.ProduceState):
// under exactly-once in its transaction, with the replies and the consumed
// offsets, so an aborted batch leaves no trace and the undo log stays the
// in-memory rollback; under at-least-once after the replies and dead
// letters are acknowledged and before the offsets are committed. A crash
// then replays the batch: parts count once and a request already done
// drops its results as late, so the only duplicate a crash can cause is a
// reply written again when the aggregator died between the reply's
// acknowledgement and the changelog's (one produce round trip).
//
// With an offset commit interval (kafkaconfig.Role.OffsetCommitInterval,
// 100ms by default) the open and held entries are written once per
// interval instead, in the batch after which the offsets are committed
// (the hop's Batch.StateDue), folding what the interval's batches did: a
// request opened and completed within one interval writes only its
// done-list line. The batches in between hold their state
// (Batch.HoldState), and the hop commits none of their offsets until it is
// written: under at-least-once it also has the aggregator write it before
// the commit of a revocation and at the end of Run; under exactly-once
// their transactions commit the offsets where they were, and a crash or a
// revocation leaves the interval to be consumed again. What a batch
// completes is still written in that batch, right after its replies (in
// its transaction under exactly-once, so no reply is written twice); under
// at-least-once the duplicate window stays one round trip. Under
// exactly-once a batch that writes a dead letter writes the state too, so
// that no crash writes it twice, and an interval's end leaves out the open
// requests the interval created: their partition is committed at the
// first record of the oldest, and they are written at the next end if
// still open.
//
// # Restore on assignment
//
// When partitions are assigned, the aggregator reads their changelog
// partitions before it processes any of their results: franz-go calls
// OnPartitionsAssigned and starts fetching the partitions only once it
// returned (kgo's setupAssignedAndHeartbeat: assign, wait, then fetch the
// committed offsets), and the restore runs inside that callback. To know
// where the changelog ends, the restore writes an empty-keyed tombstone to
// each partition (no entry has an empty key) and reads read_committed from
// the start up to it: everything committed before the assignment, and,
// should the previous owner have crashed inside a transaction, only once
// that transaction is aborted (by the transaction timeout, or at once when
// the owner restarts with the same instance id). The machine's lock is not
// held while reading, so other partitions are served meanwhile. The state
// is rebuilt with every timer at its original time; a deadline that passed
// while nobody owned the partition fires once the partition's backlog is
// read: the end offsets of the assigned partitions (and only those) are
// listed from their leaders beside the fetches, a partition whose leader
// does not answer asked again, its timers waiting meanwhile (a fetch of it,
// which reports the end too, may tell first), for 2s at most (catchUpMax).
// Held results expire and done requests are forgotten when they would have
// been. A restore that fails restoreAttempts times makes Run
// fail; entries that do not decode are skipped, counted in
// Stats.RestoreSkipped and logged. [Aggregator.Ready] reports whether every
// assigned partition is restored. On revocation the partition's state is
// dropped.
//
// # Concurrency
//
// Batches run on Run's goroutine; partition assignment and revocation
// come from the client's rebalance goroutine; one mutex guards the state.
// Each assignment starts a goroutine that lists the new partitions' end
// offsets; it ends within catchUpMax or when the client or Run stops, and
// Run waits for it.
// A Merge is called on Run's goroutine, one request at a time.
package aggregator
