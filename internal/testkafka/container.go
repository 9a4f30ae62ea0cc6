package testkafka

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	kafkatc "github.com/testcontainers/testcontainers-go/modules/kafka"
)

// DefaultImage is the Apache Kafka image SG_TESTCONTAINERS=1 runs unless
// SG_KAFKA_IMAGE names another. Pinned so that a suite means the same
// thing on every machine.
const DefaultImage = "apache/kafka:4.1.1"

// containerStartup bounds pulling and starting the image.
const containerStartup = 5 * time.Minute

// starter is where testcontainers' kafka module (v0.40) copies its start
// script once the mapped port is known. That script drives Confluent's
// image only, so our command waits for it, takes the advertised listeners
// it computed, and starts Apache's image with its own entry point.
const starter = "/usr/sbin/testcontainers_start.sh"

const apacheCmd = `while [ ! -f ` + starter + ` ]; do sleep 0.1; done; ` +
	`eval "$(grep '^export KAFKA_ADVERTISED_LISTENERS=' ` + starter + `)"; ` +
	`exec /etc/kafka/docker/run`

// container is the one Kafka container of this test binary: starting one
// per test would take minutes. It is package state because a test binary
// has exactly one of it; Main terminates it, and testcontainers' reaper
// removes it if Main is not used.
var container struct {
	once      sync.Once
	brokers   []string
	err       error
	terminate func()
}

// containerBrokers starts the shared container on first use and returns
// its bootstrap address, failing t if Docker or the image is unavailable.
func containerBrokers(t testing.TB) []string {
	t.Helper()
	container.once.Do(func() {
		container.brokers, container.terminate, container.err = startContainer()
	})
	if container.err != nil {
		t.Fatalf("testkafka: SG_TESTCONTAINERS=1 but no Kafka container: %v", container.err)
	}
	return container.brokers
}

func startContainer() (brokers []string, terminate func(), err error) {
	// Some Docker client paths panic when no engine is configured; that
	// must fail the test, not crash the binary.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("docker unavailable: %v", r)
		}
	}()
	image := os.Getenv("SG_KAFKA_IMAGE")
	if image == "" {
		image = DefaultImage
	}
	ctx, cancel := context.WithTimeout(context.Background(), containerStartup)
	defer cancel()
	ctr, err := kafkatc.Run(ctx, image,
		kafkatc.WithClusterID("c2NhdHRlcmdhdGhlci10Yw"), // base64url("scattergather-tc"): a valid KRaft id
		testcontainers.WithCmd("-c", apacheCmd),
		testcontainers.WithEnv(map[string]string{
			// The same broker settings as scripts/kafka-local.sh.
			"KAFKA_LOG_DIRS":                                         "/tmp/kraft-combined-logs",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "false",
			"KAFKA_NUM_PARTITIONS":                                   "1",
			"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                     "10",
			"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS":             "10",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
			"KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS":         "500",
			"KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS":             "500",
			"KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS":            "6000",
			"KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS":                "10000",
			"KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS":                  "1000",
			"KAFKA_LOG_CLEANER_BACKOFF_MS":                           "1000",
		}),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, nil, fmt.Errorf("start %s: %w", image, err)
	}
	brokers, err = ctr.Brokers(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, nil, fmt.Errorf("%s brokers: %w", image, err)
	}
	return brokers, func() { _ = testcontainers.TerminateContainer(ctr) }, nil
}

// stopContainer terminates the shared container if this binary started one.
func stopContainer() {
	if container.terminate != nil {
		container.terminate()
	}
}
