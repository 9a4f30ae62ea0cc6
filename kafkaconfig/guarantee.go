package kafkaconfig

import (
	"fmt"
	"strings"
)

// Guarantee is the delivery guarantee a role runs with.
type Guarantee string

// The guarantees.
const (
	// ExactlyOnce runs every consume-produce hop in a Kafka transaction and
	// reads read_committed.
	ExactlyOnce Guarantee = "exactly-once"
	// AtLeastOnce produces idempotently and commits offsets after the produced
	// records are acknowledged; duplicates may flow and are removed by the
	// aggregator's per-part de-duplication.
	AtLeastOnce Guarantee = "at-least-once"
)

// ParseGuarantee parses "exactly-once" or "at-least-once".
func ParseGuarantee(s string) (Guarantee, error) {
	switch g := Guarantee(strings.ToLower(strings.TrimSpace(s))); g {
	case ExactlyOnce, AtLeastOnce:
		return g, nil
	}
	return "", fmt.Errorf("guarantee %q: want %q or %q", s, ExactlyOnce, AtLeastOnce)
}
