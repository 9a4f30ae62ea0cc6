package stack

import (
	"errors"
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

// Checks returns one readiness check per role instance: each passes once
// the instance has joined its group and holds its assignment.
func (st *Stack) Checks() []metrics.Check {
	checks := []metrics.Check{{Name: "scatterer", Ready: GroupReady(st.Scatterer.GroupAssignment)}}
	for i, p := range st.Processors {
		checks = append(checks, metrics.Check{Name: fmt.Sprintf("processor %d (%s)", i, p.Group()), Ready: GroupReady(p.GroupAssignment)})
	}
	for i, a := range st.Aggregators {
		checks = append(checks, metrics.Check{Name: fmt.Sprintf("aggregator %d", i), Ready: GroupReady(a.GroupAssignment)})
	}
	return checks
}

// GroupReady turns a role's GroupAssignment into a readiness check: ready
// once the role has joined its group and received its assignment.
func GroupReady(assignment func() (joined bool, partitions int)) func() error {
	return func() error {
		if joined, _ := assignment(); !joined {
			return errors.New("not yet a member of its consumer group with an assignment")
		}
		return nil
	}
}
