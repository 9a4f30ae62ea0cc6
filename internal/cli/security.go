package cli

import (
	"flag"

	"github.com/scattergather/scattergather/kafkaconfig"
)

// registerSecurity defines the TLS and SASL flags of every command that
// talks to a cluster. Passwords are best given by file (--sasl-password-file,
// a mounted secret) or the SG_SASL_PASSWORD environment variable rather
// than on the command line, where other users can see them; they are never
// logged or printed in --help defaults.
func registerSecurity(fs *flag.FlagSet, s *kafkaconfig.Security) {
	fs.BoolVar(&s.TLS, "tls", false, "connect to the brokers over TLS (implied by the other --tls-* flags)")
	fs.StringVar(&s.CAFile, "tls-ca-file", "", "PEM file of the CAs that sign the brokers' certificates; empty uses the system pool")
	fs.StringVar(&s.CertFile, "tls-cert-file", "", "PEM client certificate, for mutual TLS")
	fs.StringVar(&s.KeyFile, "tls-key-file", "", "PEM key of the client certificate")
	fs.StringVar(&s.ServerName, "tls-server-name", "", "name to verify in the brokers' certificates, if not the dialled host")
	fs.StringVar(&s.SASLMechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none")
	fs.StringVar(&s.SASLUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&s.SASLPassword, "sasl-password", "", "SASL password (prefer --sasl-password-file or the environment)")
	fs.StringVar(&s.SASLPasswordFile, "sasl-password-file", "", "file holding the SASL password (trailing newline ignored)")
}
