package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// waitTimeout bounds every wait of a script: long enough for a fleet
// under -race on a loaded machine, short of the test's own timeout.
const waitTimeout = 90 * time.Second

// pollEvery is how often a wait looks again.
const pollEvery = 50 * time.Millisecond

// scriptFleet connects to the fleet a script started on $NATS_PORT, with
// the credentials its `stevedore up` wrote under the script's data dir,
// once the fleet has made its streams.
func scriptFleet(ts *testscript.TestScript) (jetstream.JetStream, func()) {
	url := "nats://127.0.0.1:" + ts.Getenv("NATS_PORT")
	nc, js, err := bus.ConnectOnce(url, "stevedore-script", waitTimeout, credentialsUnder(dataDirOf(ts.Getenv), url)...)
	if err != nil {
		ts.Fatalf("connect to the script's fleet: %v", err)
	}
	// The fleet may still be making its streams.
	if err := client.WaitReady(context.Background(), js, waitTimeout); err != nil {
		nc.Close()
		ts.Fatalf("the script's fleet is not ready: %v", err)
	}
	return js, nc.Close
}

// storedEvents is the events of build stored so far.
func storedEvents(ts *testscript.TestScript, js jetstream.JetStream, build string) []events.Event {
	ctx, cancel := context.WithTimeoutCause(context.Background(), waitTimeout, fmt.Errorf("no events of %s read within %s", build, waitTimeout))
	defer cancel()
	stored, err := bus.Replay(ctx, js, build)
	if err != nil {
		ts.Fatalf("replay %s: %v", build, err)
	}
	return stored
}

// waiteventCmd is "waitevent BUILD TYPE [VAR REGEXP]": it waits until the
// script's fleet has stored an event of TYPE (its short name, as watch
// prints it: snapshot.requested) for BUILD, and fails after waitTimeout.
// With VAR and REGEXP it sets $VAR to the first group of REGEXP's match
// in that event as watch prints it (the build a pre-pull runs in).
func waiteventCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || (len(args) != 2 && len(args) != 4) {
		ts.Fatalf("usage: waitevent BUILD TYPE [VAR REGEXP]")
	}
	build, name := args[0], args[1]
	js, closeFleet := scriptFleet(ts)
	defer closeFleet()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, e := range storedEvents(ts, js, build) {
			if events.NameOf(e.Type()) != name {
				continue
			}
			if len(args) == 4 {
				var line strings.Builder
				printPlain(&line, e)
				re, err := regexp.Compile(args[3])
				ts.Check(err)
				m := re.FindStringSubmatch(line.String())
				if len(m) < 2 {
					ts.Fatalf("waitevent: no match for %q (with a group) in %q", args[3], line.String())
				}
				ts.Setenv(args[2], m[1])
			}
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("build %s stored no %s within %s", build, name, waitTimeout)
		}
		time.Sleep(pollEvery)
	}
}

// inflightCmd is "inflight BUILD": the events of BUILD stored so far
// show a build that started and has not ended (no failure, no snapshot,
// no hit), so the next line acts on a build in the middle of its work.
func inflightCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: [!] inflight BUILD")
	}
	js, closeFleet := scriptFleet(ts)
	defer closeFleet()
	stored := storedEvents(ts, js, args[0])
	var out client.Outcome
	names := make([]string, 0, len(stored))
	for _, e := range stored {
		out.Add(e)
		names = append(names, events.NameOf(e.Type()))
	}
	inflight := len(stored) > 0 && !out.Done()
	switch {
	case inflight && neg:
		ts.Fatalf("build %s is in flight: %s", args[0], strings.Join(names, ", "))
	case !inflight && !neg:
		ts.Fatalf("build %s is not in flight: events %v", args[0], names)
	}
}

// awaitCmd is "await REGEXP PROG [ARGS...]": it runs PROG again and again
// until its stdout matches REGEXP, and fails after waitTimeout, so a
// script waits for a state the fleet reaches in its own time (a tag
// watch's first look) instead of sleeping.
func awaitCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: await REGEXP PROG [ARGS...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	deadline := time.Now().Add(waitTimeout)
	for {
		err := ts.Exec(args[1], args[2:]...)
		if err == nil && re.MatchString(ts.ReadFile("stdout")) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: no match for %q within %s (last error: %v)", strings.Join(args[1:], " "), args[0], waitTimeout, err)
		}
		time.Sleep(pollEvery)
	}
}

// waitwatchCmd is "waitwatch BUILD": it waits until a watch of BUILD's
// events is subscribed on the script's fleet (a consumer of the events
// stream that reads BUILD alone), so that a background `stevedore watch`
// started just before sees what happens next live, however slowly it
// started. It is meant for a build nothing else has replayed yet.
func waitwatchCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitwatch BUILD")
	}
	filter := events.BuildFilter(args[0])
	js, closeFleet := scriptFleet(ts)
	defer closeFleet()
	ctx, cancel := context.WithTimeoutCause(context.Background(), waitTimeout, fmt.Errorf("no watch of %s subscribed within %s", args[0], waitTimeout))
	defer cancel()
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		ts.Fatalf("waitwatch: %v", err)
	}
	for {
		infos := stream.ListConsumers(ctx)
		for info := range infos.Info() {
			if info.Config.FilterSubject == filter || (len(info.Config.FilterSubjects) == 1 && info.Config.FilterSubjects[0] == filter) {
				return
			}
		}
		if err := infos.Err(); err != nil && context.Cause(ctx) == nil {
			ts.Fatalf("waitwatch: list consumers: %v", err)
		}
		select {
		case <-ctx.Done():
			ts.Fatalf("no watch of %s subscribed within %s", args[0], waitTimeout)
		case <-time.After(pollEvery):
		}
	}
}
