// Package embedded runs franz-go's kfake as the in-process Kafka broker of
// `scattergather dev` and `demo`, so the pipeline runs with nothing but Go
// installed. kfake speaks the Kafka protocol (groups, transactions,
// read_committed) but is not Apache Kafka; claims about crashes of the broker
// itself are proven against real Kafka (see docs/guarantees.md).
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	// Addr is host:port to listen on; only 127.0.0.1 is supported. Port 0
	// picks a free port.
	Addr string
	// DataDir keeps the log on disk across restarts; empty keeps it in memory.
	DataDir string
	// Opts are passed to kfake after ours.
	Opts []kfake.Opt
}

// Broker is a running embedded broker.
type Broker struct {
	c *kfake.Cluster
}

// ErrAddrInUse is returned (wrapped) when the configured port is taken.
var ErrAddrInUse = errors.New("address already in use")

// Start starts a one-node kfake cluster.
func Start(cfg Config) (*Broker, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: %w", cfg.Addr, err)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("embedded broker address %q: the embedded broker only listens on 127.0.0.1", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker address %q: bad port", cfg.Addr)
	}
	if port != 0 {
		// Probe first: kfake's own error does not say which address was taken.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", portStr))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Addr, ErrAddrInUse)
			}
			return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Addr, err)
		}
		l.Close()
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.BrokerConfigs(map[string]string{
			// Fast KIP-848 rebalances; the classic protocol (franz-go's
			// default) is governed by the client's session timeout.
			"group.consumer.heartbeat.interval.ms": "500",
			"group.consumer.session.timeout.ms":    "10000",
		}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(append(opts, cfg.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Addr, err)
	}
	return &Broker{c: c}, nil
}

// Addrs returns the broker's listen addresses.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Close stops the broker, flushing its data dir if it has one.
func (b *Broker) Close() { b.c.Close() }
