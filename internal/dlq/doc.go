// Package dlq is the dead-letter workflow: it reads a dead-letter topic
// ([Scan]), selects dead letters by reason, role, source topic, time or
// position ([Filter]), decodes one for a reader ([Describe]) and writes
// dead letters back to their source topics, at most once each ([Redrive]).
// The commands `scattergather dlq list`, `dlq show` and `dlq redrive` are
// thin layers over it; docs/dead-letters.md is their guide.
//
// Usage:
//
//	log, err := dlq.Scan(ctx, cc, "sg.dlq", dlq.Filter{Reasons: []string{"unknown-route"}}, nil)
//	for _, e := range log.Entries {
//		fmt.Println(e.At, e.Source(), e.Reason, e.Redriven != nil)
//	}
//	res, err := dlq.Redrive(ctx, dlq.RedriveConfig{Client: cc, Topic: "sg.dlq",
//		Filter: dlq.Filter{Reasons: []string{"unknown-route"}}, Execute: true})
//
// # A dead letter
//
// A dead letter is the record a role refused, with the sg-dlq-* headers of
// internal/kafka/dlq.go: where it was consumed (sg-dlq-topic, -partition,
// -offset; partition and offset -1 for an output record that Kafka refused),
// which role refused it, a reason code and the error. A stand-in
// (sg-dlq-truncated: true) holds only the first bytes of a record too large
// to dead-letter whole; it cannot be redriven.
//
// # Redriven once
//
// Redrive writes each dead letter back to its source topic in a Kafka
// transaction together with a marker record on the DLQ topic itself
// (headers sg-dlq-redriven: "partition/offset" of the dead letter,
// sg-dlq-redriven-to: where it went). Its transactional id is fixed per DLQ
// topic ([TransactionalID]), and it initialises its producer id before it
// reads the DLQ: that fences any other redrive of the topic (which can then
// commit nothing more) and aborts the transaction it left open, so what
// Redrive reads is every marker that will ever be committed before its own.
// (InitProducerID of a transactional id waits until the id's last
// transaction has completed, its markers written, so the last stable offset
// Scan reads up to is past it.) It skips the dead letters that have a
// marker, and a second dead letter of the same source record (topic,
// partition, offset: at-least-once roles write one again when they consume
// the record again after a crash). A dead letter is therefore
// written back at most once, however often or concurrently Redrive runs;
// a consumer of the source topic reading committed sees it once. A dead
// letter that fails again after its redrive is a new dead letter, at a new
// offset, and can be redriven in its turn.
//
// Scan folds the markers into the dead letters they mark ([Entry.Redriven])
// and does not list them.
//
// # Bounded
//
// Scan reads every partition from its log start up to its last stable
// offset when the scan starts (read_committed), and stops there: it never
// waits for new dead letters. It reads the whole topic whatever the filter,
// since a marker can sit anywhere after the dead letter it marks; the
// topic's retention bounds the work.
//
// # Concurrency
//
// Every function is safe for concurrent use; each builds and closes its own
// clients.
package dlq
