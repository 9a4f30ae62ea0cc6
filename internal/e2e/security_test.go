package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
)

// TestSecuredPipeline runs the whole pipeline (scatterer, processors,
// aggregator and the request-reply client, every one of their clients)
// over the real broker's SSL listener, and over its SASL_SSL listener with
// SCRAM-SHA-256 and SCRAM-SHA-512, and checks every reply. It needs the
// listeners of scripts/kafka-local.sh (`make test-kafka` exports them); on
// kfake it skips, and with KAFKA_BROKERS set but no TLS listener it fails
// (testkafka.TLS).
func TestSecuredPipeline(t *testing.T) {
	sec := testkafka.TLS(t)
	for _, tc := range []struct {
		name string
		cc   kafkaconfig.Client
	}{
		{"tls", kafkaconfig.Client{Brokers: sec.TLSBrokers, Security: kafkaconfig.Security{CAFile: sec.CAFile}}},
		{"tls+" + kafkaconfig.SASLScramSHA256, kafkaconfig.Client{Brokers: sec.SASLSSLBrokers, Security: kafkaconfig.Security{CAFile: sec.CAFile,
			SASLMechanism: kafkaconfig.SASLScramSHA256, SASLUser: sec.User, SASLPassword: sec.Password}}},
		{"tls+" + kafkaconfig.SASLScramSHA512, kafkaconfig.Client{Brokers: sec.SASLSSLBrokers, Security: kafkaconfig.Security{CAFile: sec.CAFile,
			SASLMechanism: kafkaconfig.SASLScramSHA512, SASLUser: sec.User, SASLPassword: sec.Password}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkafka.New(t)
			const fanout = 3
			p := startPipeline(t, c, stack.Config{
				Client:     tc.cc,
				Routes:     table(t, fmt.Sprintf(`{"routes":[{"name":"echo","mode":"split","fanout":%d,"timeout":"30s"}]}`, fanout)),
				Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
			})
			const n = 20
			pending := make([]*client.Pending, n)
			for i := range pending {
				pp, err := p.client.Submit(t.Context(), "echo", []byte(fmt.Sprintf(`"%d"`, i)), client.Options{Timeout: 30 * time.Second})
				if err != nil {
					t.Fatalf("submit %d: %v", i, err)
				}
				pending[i] = pp
			}
			awaitEchoes(t, pending, fanout)
		})
	}
}

// failsFast bounds how long a role or client that does not trust the
// broker's certificate may take to say so: well under the default
// timeouts, which would otherwise make it look hung.
const failsFast = 10 * time.Second

// TestSecuredPipelineWrongCA: with a CA that did not sign the broker's
// certificate, on the SSL and the SASL_SSL listener, the topic set-up
// (stack.EnsureTopics, as every role command runs at start), the
// request-reply client and each role's Run fail within failsFast with the
// x509 error, rather than retrying until a timeout.
func TestSecuredPipelineWrongCA(t *testing.T) {
	sec := testkafka.TLS(t)
	c := testkafka.New(t)
	otherCA := testkafka.OtherCA(t)
	tp := kafkaconfig.Topics{Prefix: c.Prefix}
	tb := table(t, `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"5s"}]}`)
	// The topics exist (made over plaintext), so nothing but the
	// certificate stands in the roles' way.
	if err := stack.EnsureTopics(t.Context(), kafkaconfig.Client{Brokers: c.Brokers}, tp,
		kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}, tb.Names()); err != nil {
		t.Fatal(err)
	}
	srs, err := tb.ScattererRoutes()
	if err != nil {
		t.Fatal(err)
	}
	merges, err := tb.Merges()
	if err != nil {
		t.Fatal(err)
	}
	const want = "x509: certificate signed by unknown authority"
	for _, l := range []struct {
		name string
		cc   kafkaconfig.Client
	}{
		{"tls", kafkaconfig.Client{Brokers: sec.TLSBrokers, Security: kafkaconfig.Security{CAFile: otherCA}}},
		{"tls+" + kafkaconfig.SASLScramSHA256, kafkaconfig.Client{Brokers: sec.SASLSSLBrokers, Security: kafkaconfig.Security{CAFile: otherCA,
			SASLMechanism: kafkaconfig.SASLScramSHA256, SASLUser: sec.User, SASLPassword: sec.Password}}},
	} {
		steps := map[string]func(ctx context.Context) error{
			"topics": func(ctx context.Context) error {
				return stack.EnsureTopics(ctx, l.cc, tp, kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}, tb.Names())
			},
			"client": func(ctx context.Context) error {
				cl, err := client.New(ctx, client.Config{Client: l.cc, Topics: tp})
				if err == nil {
					cl.Close()
				}
				return err
			},
		}
		for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
			steps[string(g)+"/scatterer"] = func(ctx context.Context) error {
				s, err := scatterer.New(scatterer.Config{Role: kafkaconfig.Role{Client: l.cc, Topics: tp, Guarantee: g, InstanceID: "wrongca"}, Routes: srs})
				if err != nil {
					return err
				}
				return s.Run(ctx)
			}
			steps[string(g)+"/processor"] = func(ctx context.Context) error {
				p, err := processor.New(processor.Config{Role: kafkaconfig.Role{Client: l.cc, Topics: tp, Guarantee: g, InstanceID: "wrongca"}, Route: "echo"}, processor.Echo())
				if err != nil {
					return err
				}
				return p.Run(ctx)
			}
			steps[string(g)+"/aggregator"] = func(ctx context.Context) error {
				a, err := aggregator.New(aggregator.Config{Role: kafkaconfig.Role{Client: l.cc, Topics: tp, Guarantee: g, InstanceID: "wrongca"}, Merges: merges})
				if err != nil {
					return err
				}
				return a.Run(ctx)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(steps)) {
			t.Run(l.name+"/"+name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 3*failsFast)
				defer cancel()
				start := time.Now()
				err := steps[name](ctx)
				took := time.Since(start)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s = %v after %v, want an error with %q", name, err, took.Round(time.Millisecond), want)
				}
				if took > failsFast {
					t.Fatalf("%s took %v to fail, want under %v: %v", name, took.Round(time.Millisecond), failsFast, err)
				}
				t.Logf("failed in %v: %v", took.Round(time.Millisecond), err)
			})
		}
	}
}
