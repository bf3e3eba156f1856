package events_test

import (
	"fmt"
	"sort"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// A client starts a build by publishing source.resolve.requested; this is
// what goes on the wire.
func ExampleEncode() {
	e := events.New(events.SourceResolveRequested{Source: events.SourceOp{
		Identifier: "docker-image://docker.io/library/alpine:3.20",
	}})
	e.ID, e.BuildID, e.Source = "b1-request", "b1", "/stevedore/client/laptop"
	e.Time = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

	m, err := events.Encode(e)
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Subject)
	names := make([]string, 0, len(m.Header))
	for k := range m.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Printf("%s: %s\n", k, m.Header[k][0])
	}
	fmt.Println(string(m.Data))
	// Output:
	// stevedore.build.b1.source.resolve.requested
	// Content-Type: application/json
	// Nats-Msg-Id: b1-request
	// ce-id: b1-request
	// ce-source: /stevedore/client/laptop
	// ce-specversion: 1.0
	// ce-subject: b1
	// ce-time: 2026-11-23T08:00:00Z
	// ce-type: dev.stevedore.source.resolve.requested.v1
	// {"source":{"identifier":"docker-image://docker.io/library/alpine:3.20"}}
}

// A service derives the ids of what it emits from the id of its input, so
// processing the same input twice produces events the stream drops. The id
// is the first 16 bytes of sha256(cause, 0, type, 0, n), in hex.
func ExampleDeriveID() {
	fmt.Println(events.DeriveID("b1-request", events.TypeCacheKeyRequested, 0))
	first, again := events.DeriveID("b1-request", events.TypeCacheKeyRequested, 0), events.DeriveID("b1-request", events.TypeCacheKeyRequested, 0)
	fmt.Println(first == again)
	// Output:
	// 8c9423ae4d0fba265c8c495f8f2cf3c7
	// true
}
