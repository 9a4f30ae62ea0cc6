package chaos

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestValidateBrokerFaults(t *testing.T) {
	brokers := []string{"127.0.0.1:27092", "127.0.0.1:27093", "127.0.0.1:27094"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"kfake kills, the experiment", Config{BrokerKills: 2}, nil},
		{"kfake bounces", Config{BrokerBounces: 1}, []string{"broker bounces: only with brokers"}},
		{"cluster without the script", Config{Brokers: brokers, BrokerKills: 1}, []string{"kafka local"}},
		{"cluster bounces without the script", Config{Brokers: brokers, BrokerBounces: 1}, []string{"kafka local"}},
		{"cluster", Config{Brokers: brokers, BrokerKills: 2, BrokerBounces: 1, KafkaLocal: "scripts/kafka-local.sh", ReplicationFactor: 3}, nil},
		{"no faults, no script", Config{Brokers: brokers, ReplicationFactor: 3}, nil},
		{"negative", Config{Brokers: brokers, BrokerKills: -1, BrokerBounces: -2, KafkaLocal: "k"}, []string{"broker kills -1, broker bounces -2"}},
		{"replication on kfake", Config{ReplicationFactor: 3}, []string{"replication factor: 3 needs brokers"}},
		{"replication below -1", Config{Brokers: brokers, ReplicationFactor: -3}, []string{"replication factor: -3"}},
		{"pauses upside down", Config{Brokers: brokers, BrokerKills: 1, KafkaLocal: "k", BrokerPauseMin: 9 * time.Second, BrokerPauseMax: 2 * time.Second},
			[]string{"broker pause max 2s is below broker pause min 9s"}},
		{"hedge delay negative", Config{HedgeDelay: -time.Second}, []string{"hedge delay -1s"}},
		{"hedge delay past the timeout", Config{HedgeDelay: 3 * time.Second, Timeout: 2 * time.Second}, []string{"hedge delay 3s: want zero (no hedging) or a positive delay shorter than the timeout (2s)"}},
		{"hedged", Config{HedgeDelay: 500 * time.Millisecond}, nil},
		{"every problem at once", Config{BrokerBounces: 1, ReplicationFactor: 2, BrokerPauseMin: -time.Second},
			[]string{"broker bounces", "replication factor: 2", "broker pause min: -1s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Out = io.Discard
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want an error naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %v\nwant it to name %q", err, w)
				}
			}
		})
	}
}

func TestValidateBrokerDefaults(t *testing.T) {
	c := Config{Out: io.Discard}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ReplicationFactor != -1 || c.BrokerPauseMin != 5*time.Second || c.BrokerPauseMax != 15*time.Second {
		t.Errorf("defaults: replication %d, broker pauses %s..%s; want -1, 5s..15s", c.ReplicationFactor, c.BrokerPauseMin, c.BrokerPauseMax)
	}
}

func TestBrokerSchedule(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:27092"}, KafkaLocal: "k", Requests: 2000, BrokerKills: 2, BrokerBounces: 1, Out: io.Discard}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	load := 40 * time.Second // 2,000 requests at 50/s
	evs := brokerSchedule(cfg, rand.New(rand.NewPCG(7, 0xc4a05)), 3)
	if !slices.Equal(evs, brokerSchedule(cfg, rand.New(rand.NewPCG(7, 0xc4a05)), 3)) {
		t.Error("the same seed gave another schedule")
	}
	var kills, bounces int
	for i, ev := range evs {
		switch ev.sig {
		case syscall.SIGKILL:
			kills++
		case syscall.SIGTERM:
			bounces++
		}
		if ev.node < 1 || ev.node > 3 {
			t.Errorf("event %d: node %d, want 1..3", i, ev.node)
		}
		if ev.pause < 5*time.Second || ev.pause > 15*time.Second {
			t.Errorf("event %d: pause %s, want 5s..15s", i, ev.pause)
		}
		if ev.at < load/10 || ev.at > load*7/10 {
			t.Errorf("event %d at %s, want within [10%%, 70%%] of the %s load", i, ev.at, load)
		}
		if i > 0 && ev.at < evs[i-1].at {
			t.Errorf("event %d at %s before event %d at %s", i, ev.at, i-1, evs[i-1].at)
		}
	}
	if kills != 2 || bounces != 1 {
		t.Errorf("%d kills and %d bounces, want 2 and 1", kills, bounces)
	}
	if evs := brokerSchedule(Config{Requests: 10, Rate: 50}, rand.New(rand.NewPCG(1, 2)), 3); evs != nil {
		t.Errorf("no faults asked: %v", evs)
	}
}

func TestOutageRisksOneNode(t *testing.T) {
	// One node: refused before asking the cluster anything.
	risks, err := outageRisks(t.Context(), nil, 1, []string{"t"})
	if err != nil || len(risks) != 1 || !strings.Contains(risks[0], "1 node") {
		t.Errorf("one node: risks %q, err %v; want one naming the single node", risks, err)
	}
}

// TestOpenLocalCluster runs a stand-in for scripts/kafka-local.sh: the
// harness must take the node count from its env and refuse brokers that
// are not its cluster's.
func TestOpenLocalCluster(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "kafka-local.sh")
	body := `#!/bin/sh
[ "$1" = env ] || exit 2
[ -d "$SG_KAFKA_HOME" ] || { echo "kafka-local: error: not running" >&2; exit 1; }
echo KAFKA_BROKERS=127.0.0.1:27092,127.0.0.1:27093,127.0.0.1:27094
echo KAFKA_SASL_BROKERS=127.0.0.1:27142
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := openLocalCluster(t.Context(), script, dir, []string{"127.0.0.1:27093", "127.0.0.1:27092"})
	if err != nil || c.nodes != 3 {
		t.Fatalf("its own brokers: %+v, %v; want 3 nodes", c, err)
	}
	if _, err := openLocalCluster(t.Context(), script, dir, []string{"127.0.0.1:27092", "127.0.0.1:19092"}); err == nil ||
		!strings.Contains(err.Error(), "127.0.0.1:19092 is not a node") {
		t.Errorf("a foreign broker: %v; want it refused by name", err)
	}
	if _, err := openLocalCluster(t.Context(), script, filepath.Join(dir, "nowhere"), []string{"127.0.0.1:27092"}); err == nil ||
		!strings.Contains(err.Error(), "not running") {
		t.Errorf("no cluster at that home: %v; want the script's error", err)
	}
	if _, err := openLocalCluster(t.Context(), filepath.Join(dir, "missing.sh"), dir, nil); err == nil || !strings.Contains(err.Error(), "--kafka-local") {
		t.Errorf("no script: %v", err)
	}
}
