// Package kafkaconfig is what a user sets to connect a scattergather role to
// Kafka: the brokers and their security ([Client], [Security]), the topic
// layout ([Topics]), the delivery [Guarantee], and the fields every role
// shares ([Role], embedded in scatterer.Config, processor.Config and
// aggregator.Config). The Kafka plumbing that uses them stays internal.
//
//	cfg := processor.Config{
//		Role: kafkaconfig.Role{
//			Client: kafkaconfig.Client{
//				Brokers:  []string{"kafka-1:9093"},
//				Security: kafkaconfig.Security{CAFile: "/etc/kafka/ca.pem", SASLMechanism: kafkaconfig.SASLScramSHA512, SASLUser: "svc", SASLPasswordFile: "/run/secrets/kafka"},
//			},
//			Topics:     kafkaconfig.Topics{Prefix: "sg."},
//			InstanceID: "processor-0",
//		},
//		Route: "search",
//	}
package kafkaconfig
