// Package deploy_test checks the deployment files without Docker or a
// cluster:
//   - compose.yaml loads with the compose-spec loader, every role's command
//     line parses with our CLI and Prometheus scrapes every role at its
//     metrics address (compose_test.go);
//   - the Kubernetes base (kubernetes/) decodes strictly with the
//     Kubernetes API types, runs command lines and env our CLI accepts,
//     probes what the roles serve, and has a PodDisruptionBudget per
//     workload and stable instance ids (kubernetes_test.go);
//   - the Grafana dashboard and the Prometheus alert rules parse as PromQL
//     and ask only for metrics the code registers, and each alert fires on
//     the series it is about and not on healthy ones (metrics_test.go);
//   - the Dockerfile builds a static binary run as non-root.
//
// It is its own module (go.mod) so that the Kubernetes and Prometheus
// server packages it needs stay out of the library's go.mod; `make test`
// runs it (Makefile: deploy).
package deploy_test

import (
	"testing"

	"github.com/scattergather/scattergather/internal/testkafka"
)

func TestMain(m *testing.M) { testkafka.Main(m) }
