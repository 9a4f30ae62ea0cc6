package kafka

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Dead-letter headers, set on every record written to the DLQ topic.
const (
	HeaderDLQTopic     = "sg-dlq-topic"
	HeaderDLQPartition = "sg-dlq-partition"
	HeaderDLQOffset    = "sg-dlq-offset"
	HeaderDLQRole      = "sg-dlq-role"
	HeaderDLQReason    = "sg-dlq-reason"
	HeaderDLQError     = "sg-dlq-error"
)

// Headers of a redrive marker: a record that `scattergather dlq redrive`
// writes to the DLQ topic, in the transaction that writes a dead letter
// back to its source topic, so that no dead letter is redriven twice
// (internal/dlq). A marker has no key and an empty value.
const (
	// HeaderDLQRedriven names the dead letter redriven: "partition/offset"
	// in the DLQ topic.
	HeaderDLQRedriven = "sg-dlq-redriven"
	// HeaderDLQRedrivenTo says where it was written: "topic/partition/offset".
	HeaderDLQRedrivenTo = "sg-dlq-redriven-to"
)

// DeadLetter returns a copy of the consumed record src, addressed to the DLQ
// topic dlq, with headers naming where it came from, which role rejected it,
// a short reason code and the error message. Key, value and the original
// headers are kept, so the record can be inspected and re-driven. A dead
// letter that would not fit in a record (MaxRecordBytes: a source record
// near the broker's limit, plus these headers) is a stand-in instead: the
// sg-dlq-* headers, sg-dlq-size (the source value's size),
// sg-dlq-truncated, and the first StandInBytes of the key and value.
func DeadLetter(dlq string, src *kgo.Record, role, reason string, err error) *kgo.Record {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	headers := make([]kgo.RecordHeader, 0, len(src.Headers)+6)
	headers = append(headers, src.Headers...)
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(src.Topic)},
		kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(src.Partition)))},
		kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(src.Offset, 10))},
		kgo.RecordHeader{Key: HeaderDLQRole, Value: []byte(role)},
		kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(msg)},
	)
	dl := &kgo.Record{Topic: dlq, Key: src.Key, Value: src.Value, Headers: headers}
	if !Fits(dl) {
		return standIn(dl)
	}
	return dl
}

// Header returns the value of the last header named key in r, or "".
func Header(r *kgo.Record, key string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}
