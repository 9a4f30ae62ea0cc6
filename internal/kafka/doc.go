// Package kafka is scattergather's Kafka plumbing: client options shared by
// every role, topic names and their creation with kadm, and the
// consume-transform-produce loop ([Hop]) that runs each role either in Kafka
// transactions (exactly-once) or with an idempotent producer and commits after
// produce (at-least-once).
package kafka
