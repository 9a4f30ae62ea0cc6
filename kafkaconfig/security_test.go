package kafkaconfig_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// roundTrip creates a topic, produces a record and reads it back with cc.
func roundTrip(ctx context.Context, cc kafkaconfig.Client, topic string) error {
	cl, err := kafka.NewClient(cc, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequestTimeoutOverhead(2*time.Second), kgo.RetryTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// EnsureTopics returns once the topic has a leader: a produce right
	// after a bare CreateTopic once failed on Kafka with
	// UNKNOWN_TOPIC_OR_PARTITION.
	if _, err := kafkaconfig.EnsureTopics(ctx, kadm.NewClient(cl), []kafkaconfig.TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: -1}}); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("secret-ok")}).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "secret-ok" {
		return fmt.Errorf("read %d records back", fs.NumRecords())
	}
	return nil
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{kafkaconfig.SASLPlain, kafkaconfig.SASLScramSHA256, kafkaconfig.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := testkafka.NewKfake(t, kfake.EnableSASL(), kfake.Superuser(mech, "pipeline", "s3cret-pw"))
			good := kafkaconfig.Client{Brokers: c.Brokers, Security: kafkaconfig.Security{SASLMechanism: mech, SASLUser: "pipeline", SASLPassword: "s3cret-pw"}}
			if err := roundTrip(t.Context(), good, c.Name("ok")); err != nil {
				t.Fatalf("right credentials: %v", err)
			}
			// The password from a file, as a mounted secret gives it.
			file := filepath.Join(t.TempDir(), "pw")
			if err := os.WriteFile(file, []byte("s3cret-pw\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			fromFile := good
			fromFile.Security.SASLPassword, fromFile.Security.SASLPasswordFile = "", file
			if err := roundTrip(t.Context(), fromFile, c.Name("file")); err != nil {
				t.Fatalf("password file: %v", err)
			}
			bad := good
			bad.Security.SASLPassword = "wrong"
			if err := roundTrip(t.Context(), bad, c.Name("bad")); err == nil {
				t.Fatal("wrong password accepted")
			}
			none := kafkaconfig.Client{Brokers: c.Brokers}
			if err := roundTrip(t.Context(), none, c.Name("none")); err == nil {
				t.Fatal("no credentials accepted by a SASL broker")
			}
		})
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := selfSigned(t, dir)
	c := testkafka.NewKfake(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}))
	good := kafkaconfig.Client{Brokers: c.Brokers, Security: kafkaconfig.Security{CAFile: caFile, ServerName: "localhost"}}
	if err := roundTrip(t.Context(), good, c.Name("tls")); err != nil {
		t.Fatalf("tls with the CA: %v", err)
	}
	untrusted := kafkaconfig.Client{Brokers: c.Brokers, Security: kafkaconfig.Security{TLS: true, ServerName: "localhost"}}
	if err := roundTrip(t.Context(), untrusted, c.Name("untrusted")); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
}

func TestSecurityValidate(t *testing.T) {
	dir := t.TempDir()
	caFile, _ := selfSigned(t, dir)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	tests := []struct {
		name string
		s    kafkaconfig.Security
		want string
	}{
		{"plaintext", kafkaconfig.Security{}, ""},
		{"tls ca", kafkaconfig.Security{CAFile: caFile}, ""},
		{"missing ca", kafkaconfig.Security{CAFile: filepath.Join(dir, "nope.pem")}, "tls ca file"},
		{"not pem", kafkaconfig.Security{CAFile: empty}, "no PEM"},
		{"cert without key", kafkaconfig.Security{CertFile: caFile}, "both a cert file and a key file"},
		{"unknown mechanism", kafkaconfig.Security{SASLMechanism: "GSSAPI", SASLUser: "u", SASLPassword: "p"}, "want PLAIN"},
		{"no user", kafkaconfig.Security{SASLMechanism: "PLAIN", SASLPassword: "p"}, "user is empty"},
		{"no password", kafkaconfig.Security{SASLMechanism: "PLAIN", SASLUser: "u"}, "password is empty"},
		{"empty password file", kafkaconfig.Security{SASLMechanism: "PLAIN", SASLUser: "u", SASLPasswordFile: empty}, "is empty"},
		{"user without mechanism", kafkaconfig.Security{SASLUser: "u"}, "no mechanism"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestSecretsNeverPrinted: the password appears in no string form of the
// config, whichever way it is printed or logged.
func TestSecretsNeverPrinted(t *testing.T) {
	cc := kafkaconfig.Client{Brokers: []string{"b:9092"}, Security: kafkaconfig.Security{SASLMechanism: "SCRAM-SHA-512", SASLUser: "svc", SASLPassword: "hunter2-pw"}}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("connecting", "security", cc.Security)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("connecting", "security", cc.Security)
	for _, s := range []string{fmt.Sprint(cc.Security), fmt.Sprintf("%v %+v %#v %s", cc.Security, cc.Security, cc.Security, cc.Security), logged.String()} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password printed: %s", s)
		}
	}
	if !strings.Contains(logged.String(), "svc") {
		t.Errorf("the user should be visible: %s", logged.String())
	}
}

// selfSigned writes a CA certificate to dir and returns its path and a
// server certificate for localhost and 127.0.0.1 signed by it, as
// scripts/kafka-local.sh makes for the real broker.
func selfSigned(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSASLRealKafka runs the SASL round trip against the real broker's
// SASL_PLAINTEXT listener that scripts/kafka-local.sh starts. It runs
// whenever the suite runs against real Kafka (KAFKA_BROKERS), and then a
// missing KAFKA_SASL_BROKERS fails it rather than skipping it.
func TestSASLRealKafka(t *testing.T) {
	brokers := os.Getenv("KAFKA_SASL_BROKERS")
	if brokers == "" {
		if os.Getenv("KAFKA_BROKERS") != "" {
			t.Fatal("KAFKA_BROKERS is set but KAFKA_SASL_BROKERS is not: start the broker with scripts/kafka-local.sh (it has a SCRAM listener) and export what `scripts/kafka-local.sh env` prints")
		}
		t.Skip("no real broker: SASL is covered on kfake by TestSASL; set KAFKA_SASL_BROKERS to run it on Kafka")
	}
	user, pass := os.Getenv("KAFKA_SASL_USER"), os.Getenv("KAFKA_SASL_PASSWORD")
	prefix := testkafka.New(t).Prefix
	for _, mech := range []string{kafkaconfig.SASLScramSHA256, kafkaconfig.SASLScramSHA512, kafkaconfig.SASLPlain} {
		t.Run(mech, func(t *testing.T) {
			cc := kafkaconfig.Client{Brokers: strings.Split(brokers, ","), Security: kafkaconfig.Security{SASLMechanism: mech, SASLUser: user, SASLPassword: pass}}
			topic := prefix + "sasl." + strings.ToLower(mech)
			if err := roundTrip(t.Context(), cc, topic); err != nil {
				t.Fatalf("right credentials: %v", err)
			}
			t.Cleanup(func() {
				cl, err := kafka.NewClient(cc)
				if err == nil {
					kadm.NewClient(cl).DeleteTopics(context.Background(), topic)
					cl.Close()
				}
			})
			cc.Security.SASLPassword = "wrong"
			if err := roundTrip(t.Context(), cc, topic+".bad"); err == nil {
				t.Fatal("wrong password accepted")
			}
		})
	}
}

// wrongCA is how a test's TLS client can fail to trust the broker: each
// must end in a clear certificate error, fast.
type wrongCA struct {
	name string
	sec  kafkaconfig.Security
	want string // in the error
}

// wrongCAs are a CA that did not sign the broker's certificate, the
// system pool (which does not hold the test CA either) and a server name
// the certificate does not cover.
func wrongCAs(t *testing.T, rightCA string) []wrongCA {
	otherCA, _ := selfSigned(t, t.TempDir())
	return []wrongCA{
		{"other CA", kafkaconfig.Security{CAFile: otherCA}, "x509: certificate signed by unknown authority"},
		{"system pool", kafkaconfig.Security{TLS: true}, "x509: certificate signed by unknown authority"},
		{"wrong server name", kafkaconfig.Security{CAFile: rightCA, ServerName: "kafka.example"}, "x509: certificate is valid for localhost, not kafka.example"},
	}
}

// failsFast is how quickly a certificate error must surface: well under
// the clients' default timeouts (a role would otherwise look hung).
const failsFast = 10 * time.Second

// TestHopWrongCA: a hop whose client does not trust the broker's
// certificate ends Run with the certificate error at once, for both
// guarantees, instead of building new clients forever (a role that never
// becomes ready and only logs warnings). On kfake with TLS, so `make test`
// covers it; TestTLSRealKafka does the same against Kafka.
func TestHopWrongCA(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := selfSigned(t, dir)
	c := testkafka.NewKfake(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}))
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		for _, w := range wrongCAs(t, caFile) {
			t.Run(string(g)+"/"+w.name, func(t *testing.T) {
				t.Parallel()
				hopWrongCA(t, kafkaconfig.Client{Brokers: c.Brokers, Security: w.sec}, c.Name(string(g)+"."+strings.ReplaceAll(w.name, " ", "_")), g, w.want)
			})
		}
	}
}

// hopWrongCA runs a hop on cc, whose TLS settings do not trust the
// broker, and checks that Run ends within failsFast with want in its error.
func hopWrongCA(t *testing.T, cc kafkaconfig.Client, name string, g kafkaconfig.Guarantee, want string) {
	t.Helper()
	hop, err := kafka.NewHop(kafka.HopConfig{Client: cc, Group: name, Topics: []string{name}, Guarantee: g,
		TransactionalID: name, InstanceID: "i1", Tick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*failsFast)
	defer cancel()
	start := time.Now()
	err = hop.Run(ctx, func(context.Context, *kafka.Batch) error { return nil }, func(bool) {})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run = %v after %v, want an error with %q", err, took.Round(time.Millisecond), want)
	}
	if took > failsFast {
		t.Fatalf("Run took %v to fail, want under %v: %v", took.Round(time.Millisecond), failsFast, err)
	}
	t.Logf("failed in %v: %v", took.Round(time.Millisecond), err)
}

// TestTLSRealKafka runs the round trip against the real broker's SSL and
// SASL_SSL listeners that scripts/kafka-local.sh starts (KAFKA_TLS_BROKERS,
// KAFKA_SASL_SSL_BROKERS, KAFKA_TLS_CA): with the CA that signed the
// broker's certificate it works, over TLS alone and with every SASL
// mechanism; a wrong CA, the system pool or a wrong server name fail fast
// with the certificate error, for a plain client and for a hop (a role's
// consume-produce loop). With KAFKA_BROKERS set and those variables
// missing it fails rather than skipping (testkafka.TLS).
func TestTLSRealKafka(t *testing.T) {
	sec := testkafka.TLS(t)
	c := testkafka.New(t) // the same cluster: its prefix, and its topics deleted at the end
	tlsOnly := kafkaconfig.Client{Brokers: sec.TLSBrokers, Security: kafkaconfig.Security{CAFile: sec.CAFile}}
	t.Run("tls", func(t *testing.T) {
		if err := roundTrip(t.Context(), tlsOnly, c.Name("tls")); err != nil {
			t.Fatalf("tls with the CA: %v", err)
		}
	})
	for _, mech := range []string{kafkaconfig.SASLScramSHA256, kafkaconfig.SASLScramSHA512, kafkaconfig.SASLPlain} {
		t.Run("tls+"+mech, func(t *testing.T) {
			cc := kafkaconfig.Client{Brokers: sec.SASLSSLBrokers, Security: kafkaconfig.Security{CAFile: sec.CAFile,
				SASLMechanism: mech, SASLUser: sec.User, SASLPassword: sec.Password}}
			if err := roundTrip(t.Context(), cc, c.Name("sasl_ssl."+strings.ToLower(mech))); err != nil {
				t.Fatalf("tls and sasl with the CA and the right password: %v", err)
			}
			cc.Security.SASLPassword = "wrong"
			if err := roundTrip(t.Context(), cc, c.Name("sasl_ssl.bad."+strings.ToLower(mech))); err == nil {
				t.Fatal("wrong password accepted over SASL_SSL")
			}
		})
	}
	for _, w := range wrongCAs(t, sec.CAFile) {
		for _, l := range []struct {
			name    string
			brokers []string
			sasl    bool
		}{{"tls", sec.TLSBrokers, false}, {"tls+" + kafkaconfig.SASLScramSHA256, sec.SASLSSLBrokers, true}} {
			t.Run(l.name+"/"+w.name, func(t *testing.T) {
				t.Parallel()
				cc := kafkaconfig.Client{Brokers: l.brokers, Security: w.sec}
				if l.sasl {
					cc.Security.SASLMechanism, cc.Security.SASLUser, cc.Security.SASLPassword = kafkaconfig.SASLScramSHA256, sec.User, sec.Password
				}
				start := time.Now()
				err := roundTrip(t.Context(), cc, c.Name("wrongca"))
				took := time.Since(start)
				if err == nil || !strings.Contains(err.Error(), w.want) {
					t.Fatalf("round trip = %v after %v, want an error with %q", err, took.Round(time.Millisecond), w.want)
				}
				if took > failsFast {
					t.Fatalf("took %v to fail, want under %v: %v", took.Round(time.Millisecond), failsFast, err)
				}
				hopWrongCA(t, cc, c.Name("hop."+strings.ReplaceAll(w.name, " ", "_")+"."+l.name), kafkaconfig.ExactlyOnce, w.want)
			})
		}
	}
}
