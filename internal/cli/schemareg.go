package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/schemareg"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// registryFlags select the optional schema-registry mode (see
// docs/schema-registry.md). The password is read from a file, never taken on
// the command line, and never logged.
type registryFlags struct {
	url          string
	user         string
	passwordFile string
}

func (r *registryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "schema-registry", "", "Confluent-compatible schema registry URL, e.g. http://registry:8081: register the record schemas at start and write/read the Confluent wire format (0x00 + schema id) instead of Avro single-object encoding; empty for single-object (see docs/schema-registry.md)")
	fs.StringVar(&r.user, "schema-registry-user", "", "schema registry HTTP basic-auth user")
	fs.StringVar(&r.passwordFile, "schema-registry-password-file", "", "file holding the schema registry basic-auth password (trailing newline ignored)")
}

// apply registers the schemas with the registry, when one is configured, and
// returns cc with the hooks that rewrite the records' wire format. An
// unreachable registry is an error naming its URL.
func (r *registryFlags) apply(ctx context.Context, cc kafkaconfig.Client, log *slog.Logger) (kafkaconfig.Client, error) {
	if r.url == "" {
		if r.user != "" || r.passwordFile != "" {
			return cc, fmt.Errorf("--schema-registry-user/--schema-registry-password-file given without --schema-registry")
		}
		return cc, nil
	}
	cfg := schemareg.Config{URL: r.url, User: r.user, Logger: log}
	if r.passwordFile != "" {
		b, err := os.ReadFile(r.passwordFile)
		if err != nil {
			return cc, fmt.Errorf("--schema-registry-password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	reg, err := schemareg.New(ctx, cfg)
	if err != nil {
		return cc, fmt.Errorf("--schema-registry: %w", err)
	}
	cc.Hooks = append(append([]kgo.Hook(nil), cc.Hooks...), reg.Hooks()...)
	return cc, nil
}
