package kafkaconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The SASL mechanisms every role speaks.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Security is how a client authenticates to the brokers and encrypts the
// connection. The zero value is a plaintext, unauthenticated connection.
// Its String method never prints a secret.
type Security struct {
	// TLS turns TLS on; it is implied by any of the TLS files below.
	TLS bool
	// CAFile verifies the brokers' certificates; empty uses the system pool.
	CAFile string
	// CertFile and KeyFile are the client certificate, for mutual TLS.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.
	SASLMechanism string
	SASLUser      string
	// SASLPassword is the password itself; SASLPasswordFile is read at
	// start instead when set (a mounted secret).
	SASLPassword     string
	SASLPasswordFile string
}

// String describes s without secrets, for logs.
func (s Security) String() string {
	var parts []string
	if s.tlsOn() {
		parts = append(parts, "tls")
		if s.CertFile != "" {
			parts = append(parts, "mtls")
		}
	}
	if s.SASLMechanism != "" {
		parts = append(parts, fmt.Sprintf("sasl=%s user=%s", s.SASLMechanism, s.SASLUser))
	}
	if len(parts) == 0 {
		return "plaintext"
	}
	return strings.Join(parts, " ")
}

// GoString keeps the password out of %#v.
func (s Security) GoString() string { return s.String() }

// LogValue keeps the password out of structured logs.
func (s Security) LogValue() slog.Value { return slog.StringValue(s.String()) }

func (s Security) tlsOn() bool {
	return s.TLS || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != ""
}

// Validate reports every problem with s at once, reading the files it names.
func (s Security) Validate() error {
	var errs []error
	if (s.CertFile == "") != (s.KeyFile == "") {
		errs = append(errs, errors.New("tls: a client certificate needs both a cert file and a key file"))
	}
	if s.tlsOn() {
		if _, err := s.tlsConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	switch strings.ToUpper(s.SASLMechanism) {
	case "":
		if s.SASLUser != "" || s.SASLPassword != "" || s.SASLPasswordFile != "" {
			errs = append(errs, errors.New("sasl: a user or password is set but no mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"))
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if s.SASLUser == "" {
			errs = append(errs, fmt.Errorf("sasl %s: user is empty", s.SASLMechanism))
		}
		if s.SASLPassword != "" && s.SASLPasswordFile != "" {
			errs = append(errs, errors.New("sasl: give the password or a password file, not both"))
		}
		if _, err := s.password(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("sasl mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.SASLMechanism))
	}
	return errors.Join(errs...)
}

func (s Security) password() (string, error) {
	if s.SASLPasswordFile == "" {
		if s.SASLPassword == "" {
			return "", errors.New("sasl: password is empty")
		}
		return s.SASLPassword, nil
	}
	b, err := os.ReadFile(s.SASLPasswordFile)
	if err != nil {
		return "", fmt.Errorf("sasl password file: %w", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("sasl password file %s is empty", s.SASLPasswordFile)
	}
	return p, nil
}

func (s Security) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca file %s: no PEM certificate in it", s.CAFile)
		}
		cfg.RootCAs = pool
	}
	if s.CertFile != "" && s.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (s Security) mechanism() (sasl.Mechanism, error) {
	pass, err := s.password()
	if err != nil {
		return nil, err
	}
	switch strings.ToUpper(s.SASLMechanism) {
	case SASLPlain:
		return plain.Auth{User: s.SASLUser, Pass: pass}.AsMechanism(), nil
	case SASLScramSHA256:
		return scram.Auth{User: s.SASLUser, Pass: pass}.AsSha256Mechanism(), nil
	case SASLScramSHA512:
		return scram.Auth{User: s.SASLUser, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("sasl mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.SASLMechanism)
}

// options returns the kgo options for s; Validate has checked it.
func (s Security) options() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.tlsOn() {
		cfg, err := s.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.Dialer((&tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}).DialContext))
	}
	if s.SASLMechanism != "" {
		m, err := s.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}
