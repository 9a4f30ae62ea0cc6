package kafkaconfig

// DefaultPrefix starts every topic name unless configured otherwise.
const DefaultPrefix = "sg."

// Topics names the pipeline's topics under one prefix; an empty Prefix is
// [DefaultPrefix], here as in every role.
type Topics struct {
	Prefix string
}

// Requests is where clients write requests.
func (t Topics) Requests() string { return t.prefix() + "requests" }

// Tasks is where the scatterer writes the tasks of route.
func (t Topics) Tasks(route string) string { return t.prefix() + "tasks." + route }

// Results carries manifests and results, keyed by correlation id.
func (t Topics) Results() string { return t.prefix() + "results" }

// Replies carries one reply per request.
func (t Topics) Replies() string { return t.prefix() + "replies" }

// State is the aggregator's compacted changelog, co-partitioned with Results.
func (t Topics) State() string { return t.prefix() + "aggregator-state" }

// DLQ is the dead-letter topic.
func (t Topics) DLQ() string { return t.prefix() + "dlq" }

// prefix is Prefix, or DefaultPrefix when it is empty.
func (t Topics) prefix() string {
	if t.Prefix == "" {
		return DefaultPrefix
	}
	return t.Prefix
}

// withDefaults returns t with an empty Prefix replaced by DefaultPrefix.
func (t Topics) withDefaults() Topics {
	if t.Prefix == "" {
		t.Prefix = DefaultPrefix
	}
	return t
}
