// Package schemas holds the Avro schemas of scattergather's records and the Go
// types and codecs built from them.
//
// The five records follow one request through the pipeline:
//
//	Request  -> requests          (client → scatterer)
//	Task     -> tasks.<route>     (scatterer → processors)
//	Manifest -> results           (scatterer → aggregator, what to expect)
//	Result   -> results           (processor → aggregator)
//	Reply    -> replies           (aggregator → client)
//
// A sixth, AggregationState, is the aggregator's own: its changelog on the
// compacted aggregator-state topic, so that a partition's open requests
// survive a move to another instance.
//
// The codecs are written by hand for these fixed schemas (fast.go, state.go):
// every role encodes or decodes a record per record it moves. goavro, built
// from the .avsc files, is the reference they are tested against (the same
// bytes, the same values, the same errors), and the path a record written
// with an older release's schema would take (none differs from the current
// one yet; see README.md, Evolution).
//
// Records are written in Avro single-object encoding: the two bytes 0xC3 0x01,
// the little-endian CRC-64-AVRO fingerprint of the writer's schema, then the
// Avro binary body. Any Avro library can read them from the .avsc files in this
// directory alone. The fingerprint also tells a Manifest from a Result on the
// results topic (see [KindOf]).
//
// Usage:
//
//	b, err := schemas.EncodeTask(task)
//	...
//	task, err := schemas.DecodeTask(b)
//
// Codecs are built once, on first use, and are safe for concurrent use.
package schemas
