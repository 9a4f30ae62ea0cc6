// Command kprobe tells whether a Kafka cluster is ready for tests: every
// seed answers, metadata lists the expected number of brokers and a
// controller. scripts/kafka-local.sh runs it in a loop while a broker
// starts, and for `status`.
//
//	kprobe -brokers 127.0.0.1:19092 -want 1 -timeout 3s
//
// It prints one line and exits 0 when the cluster is ready, 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:19092", "comma separated seed brokers")
	want := flag.Int("want", 1, "number of brokers metadata must list")
	timeout := flag.Duration("timeout", 3*time.Second, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	line, err := probe(ctx, strings.Split(*brokers, ","), *want)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kprobe:", err)
		os.Exit(1)
	}
	fmt.Println(line)
}

func probe(ctx context.Context, seeds []string, want int) (string, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.DialTimeout(time.Second),
		kgo.RetryTimeout(time.Second),
		kgo.MetadataMinAge(10*time.Millisecond),
	)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	if len(md.Brokers) < want {
		return "", fmt.Errorf("metadata lists %d of %d brokers", len(md.Brokers), want)
	}
	if md.Controller < 0 {
		return "", errors.New("metadata has no controller yet")
	}
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", fmt.Errorf("api versions: %w", err)
	}
	version := "unknown"
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			return "", fmt.Errorf("api versions from node %d: %w", v.NodeID, v.Err)
		}
		version = v.VersionGuess()
	}
	return fmt.Sprintf("ready: cluster %s, %d brokers, controller %d, kafka %s",
		md.Cluster, len(md.Brokers), md.Controller, version), nil
}
