package stack

import (
	"fmt"

	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// observedClient returns the client config of role: cfg.Client with the
// role's kprom hooks when KafkaMetrics is set.
func (cfg *Config) observedClient(role string) kafkaconfig.Client {
	cc := cfg.Client
	if hooks := cfg.KafkaMetrics.Hooks(role); hooks != nil {
		cc.NewHooks = hooks
	}
	return cc
}

// Groups returns the consumer groups of the stack's roles, each once: the
// groups whose lag the dev command samples.
func (st *Stack) Groups() []string {
	var groups []string
	seen := map[string]bool{}
	add := func(g string) {
		if !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
	}
	add(st.Scatterer.Group())
	for _, p := range st.Processors {
		add(p.Group())
	}
	for _, a := range st.Aggregators {
		add(a.Group())
	}
	return groups
}

// Checks returns one readiness check per role instance, its Ready: each
// passes once the instance is settled in its group (and an aggregator has
// restored its partitions).
func (st *Stack) Checks() []metrics.Check {
	checks := []metrics.Check{{Name: "scatterer", Ready: st.Scatterer.Ready}}
	for i, p := range st.Processors {
		checks = append(checks, metrics.Check{Name: fmt.Sprintf("processor %d (%s)", i, p.Group()), Ready: p.Ready})
	}
	for i, a := range st.Aggregators {
		checks = append(checks, metrics.Check{Name: fmt.Sprintf("aggregator %d", i), Ready: a.Ready})
	}
	return checks
}
