package testkafka

import (
	"os"
	"strings"
	"testing"
)

// Secured names the real broker's secured listeners, from the variables
// `scripts/kafka-local.sh env` prints (and `make test-kafka` exports). The
// listeners belong to the cluster KAFKA_BROKERS names, so topics a test
// makes through them under its [Cluster.Prefix] are deleted with the rest.
type Secured struct {
	// TLSBrokers is KAFKA_TLS_BROKERS: the SSL listeners (server
	// certificate only).
	TLSBrokers []string
	// SASLSSLBrokers is KAFKA_SASL_SSL_BROKERS: the SASL_SSL listeners
	// (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS).
	SASLSSLBrokers []string
	// CAFile is KAFKA_TLS_CA: the PEM of the CA that signs the brokers'
	// certificates.
	CAFile string
	// User and Password are KAFKA_SASL_USER and KAFKA_SASL_PASSWORD.
	User, Password string
}

// TLS returns the real broker's TLS listeners for t. Without a real broker
// (KAFKA_BROKERS unset) it skips t: TLS is then covered on kfake. With one,
// a missing or empty variable fails t rather than skipping it, so that a
// run against real Kafka (CI's `make test-kafka`) cannot pass without
// having tested TLS.
func TLS(t testing.TB) Secured {
	t.Helper()
	s := Secured{
		TLSBrokers:     splitBrokers(os.Getenv("KAFKA_TLS_BROKERS")),
		SASLSSLBrokers: splitBrokers(os.Getenv("KAFKA_SASL_SSL_BROKERS")),
		CAFile:         os.Getenv("KAFKA_TLS_CA"),
		User:           os.Getenv("KAFKA_SASL_USER"),
		Password:       os.Getenv("KAFKA_SASL_PASSWORD"),
	}
	var missing []string
	for _, v := range []struct {
		name string
		set  bool
	}{
		{"KAFKA_TLS_BROKERS", len(s.TLSBrokers) > 0},
		{"KAFKA_SASL_SSL_BROKERS", len(s.SASLSSLBrokers) > 0},
		{"KAFKA_TLS_CA", s.CAFile != ""},
		{"KAFKA_SASL_USER", s.User != ""},
		{"KAFKA_SASL_PASSWORD", s.Password != ""},
	} {
		if !v.set {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("KAFKA_BROKERS") != "" {
			verb := "is"
			if len(missing) > 1 {
				verb = "are"
			}
			t.Fatalf("testkafka: KAFKA_BROKERS is set but %s %s not: start the broker with scripts/kafka-local.sh (it has SSL and SASL_SSL listeners) and export what `scripts/kafka-local.sh env` prints", strings.Join(missing, ", "), verb)
		}
		t.Skipf("testkafka: no real broker with TLS listeners (%s unset): TLS is covered on kfake; `make test-kafka` runs this on Kafka", strings.Join(missing, ", "))
	}
	if _, err := os.Stat(s.CAFile); err != nil {
		t.Fatalf("testkafka: KAFKA_TLS_CA: %v", err)
	}
	return s
}
