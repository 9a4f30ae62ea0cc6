package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaNamespace starts the names of the Kafka client metrics.
const KafkaNamespace = Namespace + "_kafka"

// KafkaMetrics hands out franz-go kprom hooks, a fresh set per client:
// kprom registers its vectors when a client starts and unregisters them
// when it closes, so one set cannot serve two clients. Each set carries the
// labels role and client (the client's number for that role in the
// process), which keep the sets of one registry apart. Build one
// KafkaMetrics per registry. Safe for concurrent use.
type KafkaMetrics struct {
	reg prometheus.Registerer

	mu sync.Mutex
	n  map[string]int // clients per role so far
}

// NewKafkaMetrics returns the kprom hooks factory of reg; nil reg gives no
// hooks.
func NewKafkaMetrics(reg prometheus.Registerer) *KafkaMetrics {
	return &KafkaMetrics{reg: reg, n: map[string]int{}}
}

// Hooks returns a function for kafkaconfig.Client.NewHooks: every client
// built from that config gets its own kprom metrics labelled role.
func (k *KafkaMetrics) Hooks(role string) func() []kgo.Hook {
	if k == nil || k.reg == nil {
		return nil
	}
	return func() []kgo.Hook {
		k.mu.Lock()
		k.n[role]++
		n := k.n[role]
		k.mu.Unlock()
		reg := prometheus.WrapRegistererWith(prometheus.Labels{"role": role, "client": strconv.Itoa(n)}, k.reg)
		return []kgo.Hook{kprom.NewMetrics(KafkaNamespace,
			kprom.Registerer(reg),
			kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.Batches, kprom.UncompressedBytes),
			kprom.Histograms(kprom.RequestDurationE2E),
		)}
	}
}
