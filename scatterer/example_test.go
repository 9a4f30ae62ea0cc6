package scatterer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
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

// A scatterer with a split function of its own: every word of a request
// becomes one part. An echo processor and an aggregator (startEchoAndCollect)
// answer the parts, and the client prints the reply.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, topics, closeKafka := startKafka(ctx, "words")
	defer closeKafka()

	words := scatterer.Route{
		Name:   "words",
		Mode:   scatterer.Split,
		Fanout: 1, // a split route needs one; this split counts the words instead
		Split: func(req schemas.Request, _ int) ([]scatterer.Part, error) {
			var parts []scatterer.Part
			for i, w := range strings.Fields(string(req.Payload)) {
				parts = append(parts, scatterer.Part{ID: schemas.PartID(fmt.Sprintf("word-%d", i)), Payload: []byte(w)})
			}
			if len(parts) == 0 {
				return nil, errors.New("no words") // the request is answered FAILED
			}
			return parts, nil
		},
	}
	s, err := scatterer.New(scatterer.Config{
		Role:   kafkaconfig.Role{Client: kc, Topics: topics},
		Routes: []scatterer.Route{words},
	})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }() // until ctx ends

	stopRest := startEchoAndCollect(ctx, kc, topics, "words")
	defer stopRest()

	c, err := client.New(ctx, client.Config{Client: kc, Topics: topics})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Do(ctx, "words", []byte("scatter then gather"), client.Options{ContentType: "text/plain"})
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
	// COMPLETE ["scatter","then","gather"]
	// word-0 OK
	// word-1 OK
	// word-2 OK
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

// startEchoAndCollect runs a processor that answers every part of route with
// its payload and an aggregator that collects the parts into a JSON array
// (its default merge). The function it returns stops them.
func startEchoAndCollect(ctx context.Context, kc kafkaconfig.Client, topics kafkaconfig.Topics, route schemas.Route) (stop func()) {
	role := kafkaconfig.Role{Client: kc, Topics: topics}
	p, err := processor.New(processor.Config{Role: role, Route: route}, processor.Echo())
	if err != nil {
		log.Fatal(err)
	}
	a, err := aggregator.New(aggregator.Config{Role: role})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{p.Run, a.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Print(err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
