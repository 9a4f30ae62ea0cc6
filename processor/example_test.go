package processor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
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

// A processor with a handler of its own: each shard answers the payload in
// capitals. Input it cannot handle is a Permanent error, answered ERROR at
// once; any other error is retried (Config.Retries) first. A scatterer
// (two shards per request) and an aggregator (startScattererAndCollect) run
// around it, and the client prints both replies.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, topics, closeKafka := startKafka(ctx, "shout")
	defer closeKafka()

	shout := processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		if len(t.Payload) == 0 {
			return nil, processor.Permanent(errors.New("nothing to shout"))
		}
		return fmt.Appendf(nil, "%s: %s", t.PartID, bytes.ToUpper(t.Payload)), nil
	})
	p, err := processor.New(processor.Config{
		Role:  kafkaconfig.Role{Client: kc, Topics: topics},
		Route: "shout",
	}, shout)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }() // until ctx ends

	stopRest := startScattererAndCollect(ctx, kc, topics, scatterer.Route{Name: "shout", Mode: scatterer.Split, Fanout: 2})
	defer stopRest()

	c, err := client.New(ctx, client.Config{Client: kc, Topics: topics})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, payload := range []string{"hello", ""} {
		reply, err := c.Do(ctx, "shout", []byte(payload), client.Options{ContentType: "text/plain"})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(reply.Status)
		for _, part := range reply.Parts {
			if part.Error != "" {
				fmt.Printf("  %s %s: %s\n", part.PartID, part.Status, part.Error)
			} else {
				fmt.Printf("  %s %s\n", part.PartID, part.Status)
			}
		}
		if len(reply.Payload) > 0 {
			fmt.Printf("  payload %s\n", reply.Payload)
		}
	}

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// COMPLETE
	//   shard-0 OK
	//   shard-1 OK
	//   payload ["shard-0: HELLO","shard-1: HELLO"]
	// FAILED
	//   shard-0 ERROR: nothing to shout
	//   shard-1 ERROR: nothing to shout
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

// startScattererAndCollect runs a scatterer for route and an aggregator that
// collects the parts into a JSON array (its default merge). The function it
// returns stops them.
func startScattererAndCollect(ctx context.Context, kc kafkaconfig.Client, topics kafkaconfig.Topics, route scatterer.Route) (stop func()) {
	role := kafkaconfig.Role{Client: kc, Topics: topics}
	s, err := scatterer.New(scatterer.Config{Role: role, Routes: []scatterer.Route{route}})
	if err != nil {
		log.Fatal(err)
	}
	a, err := aggregator.New(aggregator.Config{Role: role})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{s.Run, a.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Print(err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
