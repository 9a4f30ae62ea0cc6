package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// An aggregator with a merge of its own: a sum of squares, scattered. The
// request is a JSON array of numbers; the scatterer makes each number a part
// (scatterer.JSONArray), a processor squares it (startScattererAndSquare),
// and the merge adds the squares up into the reply's payload.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, topics, closeKafka := startKafka(ctx, "squares")
	defer closeKafka()

	// A Merge gets the OK parts only, in the manifest's order; the reply's
	// parts say which others are missing or failed.
	sum := func(parts []aggregator.Part) ([]byte, error) {
		total := 0
		for _, p := range parts {
			var n int
			if err := json.Unmarshal(p.Payload, &n); err != nil {
				return nil, fmt.Errorf("part %s: %w", p.ID, err) // the reply is FAILED
			}
			total += n
		}
		return json.Marshal(total)
	}
	a, err := aggregator.New(aggregator.Config{
		Role:   kafkaconfig.Role{Client: kc, Topics: topics},
		Merges: map[schemas.Route]aggregator.Merge{"squares": sum},
	})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }() // until ctx ends

	stopRest := startScattererAndSquare(ctx, kc, topics, "squares")
	defer stopRest()

	c, err := client.New(ctx, client.Config{Client: kc, Topics: topics})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Do(ctx, "squares", []byte(`[1, 2, 3]`), client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Status, string(reply.Payload))
	for _, p := range reply.Parts {
		fmt.Println(p.PartID, p.Status)
	}

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// COMPLETE 14
	// item-0 OK
	// item-1 OK
	// item-2 OK
}

// startKafka starts an in-process Kafka broker (kfake) and creates the
// pipeline's topics for routes, one partition each.
func startKafka(ctx context.Context, routes ...string) (kafkaconfig.Client, kafkaconfig.Topics, func()) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	kc := kafkaconfig.Client{Brokers: fake.ListenAddrs()}
	topics := kafkaconfig.Topics{Prefix: "sg."}
	layout := kafkaconfig.Layout{Partitions: 1, ResultPartitions: 1, ReplicationFactor: -1}
	if _, err := kafkaconfig.CreateTopics(ctx, kc, topics, layout, routes); err != nil {
		log.Fatal(err)
	}
	return kc, topics, fake.Close
}

// startScattererAndSquare runs a scatterer that makes each element of a JSON
// array one part of route, and a processor that answers each part with its
// square. The function it returns stops them.
func startScattererAndSquare(ctx context.Context, kc kafkaconfig.Client, topics kafkaconfig.Topics, route schemas.Route) (stop func()) {
	role := kafkaconfig.Role{Client: kc, Topics: topics}
	s, err := scatterer.New(scatterer.Config{Role: role, Routes: []scatterer.Route{
		{Name: route, Mode: scatterer.Split, Fanout: 1, Split: scatterer.JSONArray()},
	}})
	if err != nil {
		log.Fatal(err)
	}
	square := processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		n, err := strconv.Atoi(string(t.Payload))
		if err != nil {
			return nil, processor.Permanent(err)
		}
		return strconv.AppendInt(nil, int64(n*n), 10), nil
	})
	p, err := processor.New(processor.Config{Role: role, Route: route}, square)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{s.Run, p.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Print(err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
