// Package e2e holds the end-to-end suite: the whole pipeline (scatterer,
// processors, aggregator) in one process against one broker, driven through
// the request-reply client. It runs unchanged on the embedded kfake broker
// (`make test`) and on real Apache Kafka (`make test-kafka`, KAFKA_BROKERS).
package e2e
