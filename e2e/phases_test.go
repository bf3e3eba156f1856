//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// chaosFigures are the numbers of the kill test.
type chaosFigures struct {
	Requested, Complete int
	Took                time.Duration
	Snapshotter         string // what was killed, and when
	Puller              string
	PullerAckPending    int
	RestartedByDocker   []string
	// FleetGets counts complete GETs per layer blob across the fleet;
	// Interrupted counts GETs the killed replica did not finish.
	FleetGetsMax, FleetRefetched, Interrupted int
	// NodeGetsMax is the most complete GETs of one blob by one replica.
	NodeGetsMax int
	// ReadyAfterKill is how long after the kill the interrupted image's
	// snapshot was ready (made by another replica).
	ReadyAfterKill time.Duration
	Stores         []storeReport
}

// chaos kills the snapshotter that is making a snapshot, right after it
// committed the first layer, and a puller as soon as the first builds reach
// the pullers, then checks that every pull completes, that no replica
// fetched a blob twice (so nothing a replica had committed was fetched again
// by it), and that every committed snapshot of every store holds exactly
// the files its chainID names.
func (su *suite) chaos(ctx context.Context, t *testing.T) {
	imgs := su.imgs["chaos"]
	snaps, err := su.s.containers(ctx, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	pullers, err := su.s.containers(ctx, "puller")
	if err != nil {
		t.Fatal(err)
	}
	byHost := map[string]container{}
	for _, c := range snaps {
		byHost[c.Short()] = c
	}
	// "extracting sha256:<layer 1>": the first layer is committed.
	second := map[string]bool{}
	for _, img := range imgs {
		second["extracting "+img.Layers[1].Digest.String()] = true
		second["extracting "+img.Layers[1].DiffID.String()] = true
	}
	f := &su.sum.chaos
	var (
		mu                   sync.Mutex
		killedSnap, killedPl container
		kills                sync.WaitGroup
		snapOnce, pullOnce   once
		// The image being extracted when the snapshotter was killed, when
		// the kill was sent, and the first snapshot.ready of each image.
		interrupted string
		killedAt    time.Time
		readyAt     = map[string]time.Time{}
	)
	_, adminJS := su.connect(t, "admin", "e2e-chaos-admin")
	start := time.Now()
	kill := func(c container, what string, out *string) {
		defer kills.Done()
		at := time.Since(start)
		if _, err := docker(context.WithoutCancel(ctx), "kill", c.ID); err != nil {
			t.Errorf("kill %s: %v", c.Name, err)
			return
		}
		mu.Lock()
		*out = fmt.Sprintf("%s (%s) killed %s after the wave started, %s", c.Name, c.Short(), at.Round(10*time.Millisecond), what)
		mu.Unlock()
	}
	each := func(e events.Event) {
		switch p := e.Data.(type) {
		case events.SnapshotReady:
			mu.Lock()
			if at, ok := readyAt[p.Source.Identifier]; !ok || e.Time.Before(at) {
				readyAt[p.Source.Identifier] = e.Time
			}
			mu.Unlock()
		case events.CacheKeyRequested:
			pullOnce.do(func() {
				mu.Lock()
				killedPl = pullers[0]
				mu.Unlock()
				kills.Add(1)
				go func() {
					kill(pullers[0], "as the first builds reached the pullers", &f.Puller)
					if c, err := adminJS.Consumer(ctx, events.StreamEvents, events.ConsumerPuller); err == nil {
						if info, err := c.Info(ctx); err == nil {
							mu.Lock()
							f.PullerAckPending = info.NumAckPending
							mu.Unlock()
						}
					}
				}()
			})
		case events.Progress:
			host, ok := strings.CutPrefix(e.Source, "/stevedore/snapshotter/")
			if !ok || !second[p.ID] {
				return
			}
			c, ok := byHost[host]
			if !ok {
				return
			}
			snapOnce.do(func() {
				mu.Lock()
				killedSnap, interrupted, killedAt = c, p.Vertex, time.Now()
				mu.Unlock()
				kills.Add(1)
				go kill(c, "while it extracted the second layer of "+p.Vertex, &f.Snapshotter)
			})
		}
	}
	// Bring the killed replicas back as a supervisor would, unless
	// docker's restart policy already did: once both kills are done, or
	// when the wave ended without one of them.
	restarted := make(chan struct{})
	waveDone := make(chan struct{})
	go func() {
		defer close(restarted)
		for !snapOnce.done.Load() || !pullOnce.done.Load() {
			select {
			case <-ctx.Done():
				return
			case <-waveDone:
			case <-time.After(100 * time.Millisecond):
				continue
			}
			break
		}
		kills.Wait()
		time.Sleep(3 * time.Second)
		mu.Lock()
		victims := []container{killedSnap, killedPl}
		mu.Unlock()
		for _, c := range victims {
			cs, _ := su.s.containers(ctx, c.Service)
			for _, now := range cs {
				if now.ID != c.ID {
					continue
				}
				if now.Running {
					mu.Lock()
					f.RestartedByDocker = append(f.RestartedByDocker, c.Name)
					mu.Unlock()
				} else if _, err := docker(ctx, "start", c.ID); err != nil {
					t.Errorf("start %s again: %v", c.Name, err)
				}
			}
		}
	}()

	var refs []string
	for range 6 {
		for _, img := range imgs {
			refs = append(refs, img.Ref())
		}
	}
	before := len(su.registryLog(ctx, t))
	results, took := su.pullAll(ctx, t, "chaos", refs, each)
	close(waveDone)
	<-restarted
	f.Requested, f.Took = len(results), took
	for _, r := range results {
		if r.OK() {
			f.Complete++
		} else {
			t.Errorf("pull did not complete: %s", r)
		}
	}
	if !snapOnce.done.Load() {
		t.Errorf("no snapshotter was seen extracting a second layer: nothing was killed mid-snapshot")
	} else if at := readyAt[interrupted]; at.After(killedAt) {
		f.ReadyAfterKill = at.Sub(killedAt)
	} else {
		// The kill must land in the middle of the snapshot, not after it.
		t.Errorf("%s was ready at %s, before the kill at %s: make the chaos images larger", interrupted, at.Format(time.StampMilli), killedAt.Format(time.StampMilli))
	}
	if !pullOnce.done.Load() {
		t.Errorf("no build reached the pullers: no puller was killed")
	}

	// The killed replicas come back healthy, with their stores.
	if err := su.s.waitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	// GETs: per replica, no blob twice; across the fleet, what the kill
	// cost.
	lines := su.registryLog(ctx, t)[before:]
	now, err := su.s.containers(ctx, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	// A restarted container may get a new address: both are one node.
	node := map[string]string{}
	for _, c := range append(snaps, now...) {
		node[c.IP] = c.Short()
	}
	layers := objects(imgs)
	st := countGets(lines, layers)
	for _, o := range layers {
		if o.Kind != "layer" {
			continue
		}
		perNode := map[string]int{}
		for ip, n := range st.ServedBy[o.Path] {
			perNode[node[ip]] += n
		}
		for n, c := range perNode {
			f.NodeGetsMax = max(f.NodeGetsMax, c)
			if c > 1 {
				t.Errorf("snapshotter %s fetched %s %d times", n, o.Path, c)
			}
		}
		f.FleetGetsMax = max(f.FleetGetsMax, st.Complete[o.Path])
		if st.Complete[o.Path] > 1 {
			f.FleetRefetched++
		}
		f.Interrupted += st.Served[o.Path] - st.Complete[o.Path]
		if st.Complete[o.Path] == 0 {
			t.Errorf("%s was never fetched whole", o.Path)
		}
	}

	// Every store: nothing active left, every committed snapshot exact.
	var all []*genImage
	for _, set := range []string{"wave3", "wave1", "chaos"} {
		all = append(all, su.imgs[set]...)
	}
	for _, c := range now {
		rep, err := inspectStore(ctx, c.ID, all, su.tmp)
		if err != nil {
			t.Errorf("inspect store of %s: %v", c.Name, err)
			continue
		}
		f.Stores = append(f.Stores, rep)
		for _, bad := range rep.Corrupt {
			t.Errorf("corrupt snapshot on %s: %s", c.Name, bad)
		}
		if rep.Active > 0 {
			t.Errorf("%s holds %d uncommitted snapshots while idle", c.Name, rep.Active)
		}
	}
}

// restartFigures are the numbers of the NATS restart test.
type restartFigures struct {
	Requested, Complete int
	Took                time.Duration
	RestartAt, Down     time.Duration
	Reconnected         time.Duration
	Connections         int
}

// natsRestart restarts the NATS container while snapshots are being made
// and checks that the services reconnect and every build completes.
func (su *suite) natsRestart(ctx context.Context, t *testing.T) {
	imgs := su.imgs["restart"]
	f := &su.sum.restart
	ids, err := su.s.containerIDs(ctx, "nats")
	if err != nil || len(ids) != 1 {
		t.Fatalf("nats container: %v %v", ids, err)
	}
	services, err := su.s.containers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var workers int
	for _, c := range services {
		if c.Service != "nats" && c.Service != "registry" {
			workers++
		}
	}
	var restart once
	done := make(chan struct{})
	start := time.Now()
	each := func(e events.Event) {
		if _, ok := e.Data.(events.Progress); !ok || !strings.HasPrefix(e.Source, "/stevedore/snapshotter/") {
			return
		}
		restart.do(func() {
			go func() {
				defer close(done)
				f.RestartAt = time.Since(start)
				t0 := time.Now()
				if _, err := docker(context.WithoutCancel(ctx), "restart", "-t", "10", ids[0]); err != nil {
					t.Errorf("restart nats: %v", err)
					return
				}
				for !su.natsHealthy(ctx) && time.Since(t0) < time.Minute {
					time.Sleep(100 * time.Millisecond)
				}
				f.Down = time.Since(t0)
			}()
		})
	}
	var refs []string
	for range 5 {
		for _, img := range imgs {
			refs = append(refs, img.Ref())
		}
	}
	results, took := su.pullAll(ctx, t, "restart", refs, each)
	f.Requested, f.Took = len(results), took
	if !restart.done.Load() {
		t.Fatal("no snapshot progress was seen: NATS was not restarted mid-build")
	}
	<-done
	for _, r := range results {
		if r.OK() {
			f.Complete++
		} else {
			t.Errorf("build did not complete across the restart: %s", r)
		}
	}
	// Every service is connected and healthy again.
	t0 := time.Now()
	if err := su.s.waitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for time.Since(t0) < time.Minute {
		if f.Connections = su.natsConnections(ctx); f.Connections >= workers {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	f.Reconnected = time.Since(t0)
	if f.Connections < workers {
		t.Errorf("%d connections after the restart, want at least one per service replica (%d)", f.Connections, workers)
	}
}

// natsHealthy asks NATS's /healthz through the published monitoring port.
func (su *suite) natsHealthy(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", su.s.monitorPort), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// natsConnections counts the connections of the services (names
// stevedore-<service>) in /connz.
func (su *suite) natsConnections(ctx context.Context) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", su.s.monitorPort), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	var connz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := jsonDecode(resp.Body, &connz); err != nil {
		return 0
	}
	n := 0
	for _, c := range connz.Connections {
		for _, svc := range []string{"resolver", "puller", "snapshotter", "exporter"} {
			if c.Name == "stevedore-"+svc {
				n++
			}
		}
	}
	return n
}

// poisonFigures are the numbers of the poison test.
type poisonFigures struct {
	Published, DeadLettered int
	Deliveries              []string
	Baseline, WithPoison    time.Duration
	Pulls                   int
	Took                    time.Duration
}

// poison publishes malformed requests on the resolver's and the puller's
// subjects among a wave of ordinary pulls, and checks that each is
// dead-lettered after one delivery, that its build fails, and that the
// wave takes no longer than one without poison.
func (su *suite) poison(ctx context.Context, t *testing.T) {
	f := &su.sum.poison
	refs := refsFor(su.imgs["wave3"], 20)
	f.Pulls = len(refs)
	// Baseline: the same pulls (cache hits now) without poison.
	base, took := su.pullAll(ctx, t, "baseline", refs, nil)
	f.Baseline = took
	for _, r := range base {
		if !r.OK() {
			t.Errorf("baseline pull: %s", r)
		}
	}
	_, clientJS := su.connect(t, "client", "e2e-poison-client")
	_, adminJS := su.connect(t, "admin", "e2e-poison-admin")
	type poisonMsg struct {
		subject, consumer string
	}
	var msgs []poisonMsg
	for i := range 10 {
		msgs = append(msgs,
			poisonMsg{events.Subject(fmt.Sprintf("poison-r%02d-%s", i, randomHex(3)), events.TypeSourceResolveRequested), events.ConsumerResolver},
			poisonMsg{events.Subject(fmt.Sprintf("poison-p%02d-%s", i, randomHex(3)), events.TypeCacheKeyRequested), events.ConsumerPuller})
	}
	publish := func(js jetstream.JetStream, m poisonMsg) error {
		// Well-formed CloudEvents headers around a body that is not JSON:
		// the worker cannot decode it.
		enc, err := events.Encode(events.Event{ID: "poison-" + randomHex(6), Source: "/e2e/poison", BuildID: buildOf(m.subject), Time: time.Now(),
			Data: events.SourceResolveRequested{}})
		if err != nil {
			return err
		}
		msg := nats.NewMsg(m.subject)
		for k, v := range enc.Header {
			msg.Header[k] = v
		}
		msg.Header.Set("ce-type", string(typeOf(m.subject)))
		msg.Data = []byte(`{"source": {"identifier": 42`)
		_, err = js.PublishMsg(ctx, msg)
		return err
	}
	poisonDone := make(chan error, 1)
	go func() {
		var errs []error
		for _, m := range msgs {
			js := clientJS // clients may publish requests
			if m.consumer == events.ConsumerPuller {
				js = adminJS // only the resolver and the puller publish cachekey.requested
			}
			if err := publish(js, m); err != nil {
				errs = append(errs, fmt.Errorf("publish %s: %w", m.subject, err))
			}
			time.Sleep(20 * time.Millisecond)
		}
		poisonDone <- errors.Join(errs...)
	}()
	with, took := su.pullAll(ctx, t, "poisoned", refs, nil)
	f.WithPoison = took
	if err := <-poisonDone; err != nil {
		t.Fatal(err)
	}
	f.Published = len(msgs)
	for _, r := range with {
		if !r.OK() {
			t.Errorf("pull among poison: %s", r)
		}
	}
	if limit := 2*f.Baseline + 2*time.Second; f.WithPoison > limit {
		t.Errorf("the wave took %s among poison, %s without: more than %s", f.WithPoison, f.Baseline, limit)
	}

	// Every poison message is in the DLQ, with one delivery, and its
	// build failed.
	deadline := time.Now().Add(30 * time.Second)
	var letters map[string]*nats.Msg
	for {
		letters = deadLetters(ctx, adminJS)
		missing := 0
		for _, m := range msgs {
			if letters[m.subject] == nil {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	deliveries := map[string]int{}
	for _, m := range msgs {
		dl := letters[m.subject]
		if dl == nil {
			t.Errorf("%s is not in %s after 30s", m.subject, events.StreamDLQ)
			continue
		}
		f.DeadLettered++
		deliveries[dl.Header.Get(bus.HeaderDLQDeliveries)]++
		if got := dl.Header.Get(bus.HeaderDLQConsumer); got != m.consumer {
			t.Errorf("%s dead-lettered by %s, want %s", m.subject, got, m.consumer)
		}
		out, err := follow(ctx, clientJS, buildOf(m.subject), nil)
		if err != nil || out.Failed == nil {
			t.Errorf("build %s of a poison message: want source.failed, got %+v (%v)", buildOf(m.subject), out, err)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(deliveries)) {
		f.Deliveries = append(f.Deliveries, fmt.Sprintf("%d after %s deliver%s", deliveries[d], d, map[bool]string{true: "y", false: "ies"}[d == "1"]))
		if d != "1" {
			t.Errorf("%d poison messages dead-lettered after %s deliveries, want 1", deliveries[d], d)
		}
	}
}

// deadLetters reads the DLQ stream: every dead letter by the subject its
// original was published on.
func deadLetters(ctx context.Context, js jetstream.JetStream) map[string]*nats.Msg {
	out := map[string]*nats.Msg{}
	cons, err := js.OrderedConsumer(ctx, events.StreamDLQ, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return out
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumPending == 0 {
		return out
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return out
	}
	for m := range batch.Messages() {
		out[m.Headers().Get(bus.HeaderDLQSubject)] = &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
	}
	return out
}

func buildOf(subject string) string {
	id, _, _ := events.SplitSubject(subject)
	return id
}

func typeOf(subject string) events.Type {
	_, name, _ := events.SplitSubject(subject)
	s, _ := events.LookupName(name)
	return s.Type
}

// watcherFigures are the numbers of the watcher test.
type watcherFigures struct {
	Replayed                                         int
	Live                                             bool
	PublishDenied, DurableDenied, StealDenied, CLIOK bool
}

// watcher checks that the watcher user can replay and follow a build's
// events, with the library and with `stevedore watch`, and can neither
// publish events nor touch the services' durable consumers.
func (su *suite) watcher(ctx context.Context, t *testing.T) {
	f := &su.sum.watcher
	// A finished build of the first wave.
	_, clientJS := su.connect(t, "client", "e2e-watcher-client")
	build := "watched-" + randomHex(4)
	if r := pull(ctx, clientJS, su.imgs["wave3"][0].Ref(), build, nil); !r.OK() {
		t.Fatalf("pull to watch: %s", r)
	}

	var asyncErrs []error
	var mu sync.Mutex
	nc, js, err := bus.ConnectOnce(su.s.natsURL("watcher"), "e2e-watcher", 5*time.Second, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		asyncErrs = append(asyncErrs, err)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Replay.
	evs, err := bus.Replay(ctx, js, build)
	if err != nil {
		t.Fatalf("watcher replay: %v", err)
	}
	f.Replayed = len(evs)
	var ended bool
	for _, e := range evs {
		switch e.Data.(type) {
		case events.CacheHit, events.SnapshotReady:
			ended = true
		}
	}
	if !ended {
		t.Errorf("the watcher's replay of %s has no cache.hit or snapshot.ready among %d events", build, len(evs))
	}

	// Live: a core subscription sees the events of a new build.
	live := "live-" + randomHex(4)
	sub, err := nc.SubscribeSync(events.BuildFilter(live))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if r := pull(ctx, clientJS, su.imgs["wave3"][1].Ref(), live, nil); !r.OK() {
		t.Fatalf("pull to watch live: %s", r)
	}
	if _, err := sub.NextMsg(5 * time.Second); err == nil {
		f.Live = true
	} else {
		t.Errorf("the watcher's subscription to %s saw nothing: %v", events.BuildFilter(live), err)
	}
	_ = sub.Unsubscribe()

	// No publishing: a request the watcher sends is refused and not stored.
	forged := "forged-" + randomHex(4)
	pctx, cancel := context.WithTimeoutCause(ctx, 3*time.Second, errors.New("no publish acknowledgement in 3s"))
	_, perr := js.Publish(pctx, events.Subject(forged, events.TypeSourceResolveRequested), []byte(`{}`))
	cancel()
	_, adminJS := su.connect(t, "admin", "e2e-watcher-admin")
	stream, err := adminJS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(events.BuildFilter(forged)))
	if err != nil {
		t.Fatal(err)
	}
	stored := len(info.State.Subjects)
	f.PublishDenied = perr != nil && stored == 0
	if !f.PublishDenied {
		t.Errorf("a watcher published %s: error %v, %d subjects stored", forged, perr, stored)
	}

	// No pulling from a service's durable consumer (stealing its work),
	// no creating or changing one.
	cctx, cancel := context.WithTimeoutCause(ctx, 3*time.Second, errors.New("no answer in 3s"))
	_, err = js.CreateOrUpdateConsumer(cctx, events.StreamEvents, jetstream.ConsumerConfig{Durable: events.ConsumerPuller,
		FilterSubject: events.TypeFilter(events.TypeCacheKeyRequested), AckPolicy: jetstream.AckExplicitPolicy})
	cancel()
	f.DurableDenied = err != nil
	if err == nil {
		t.Errorf("a watcher created or updated the puller's consumer")
	}
	// A pull request on the durable's subject is refused by the server
	// (the request never reaches the consumer).
	inbox := nats.NewInbox()
	rsub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+events.StreamEvents+"."+events.ConsumerPuller, inbox, []byte(`{"batch":1,"no_wait":true}`)); err != nil {
		t.Fatal(err)
	}
	_, err = rsub.NextMsg(2 * time.Second)
	f.StealDenied = err != nil
	if err == nil {
		t.Errorf("a watcher's pull request on the puller's consumer was answered")
	}
	_ = rsub.Unsubscribe()
	// The server's -ERR arrives asynchronously: wait for it (5s at most).
	var violations int
	for deadline := time.Now().Add(5 * time.Second); violations == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		violations = 0
		for _, e := range asyncErrs {
			if errors.Is(e, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(e.Error()), "permissions violation") {
				violations++
			}
		}
		mu.Unlock()
	}
	if violations == 0 {
		mu.Lock()
		errs := fmt.Sprint(asyncErrs)
		mu.Unlock()
		t.Errorf("the server reported no permissions violation for the watcher's attempts (errors: %s)", errs)
	}

	// stevedore watch with the watcher's credentials.
	out, err := su.stevedore(ctx, "watch", "--nats", su.s.natsURL("watcher"), build)
	f.CLIOK = err == nil && (strings.Contains(out, "snapshot.ready") || strings.Contains(out, "cache.hit"))
	if err != nil {
		t.Errorf("stevedore watch as watcher: %v\n%s", err, out)
	} else if !f.CLIOK {
		t.Errorf("stevedore watch printed no end of the build:\n%s", out)
	}
}

// cliFigures are the CLI's results.
type cliFigures struct {
	Pull string
}

// cli runs `stevedore pull --nats nats://127.0.0.1:PORT REF` from the
// host, with no credentials (the stack's no_auth_user is the client user).
func (su *suite) cli(ctx context.Context, t *testing.T) {
	ref := su.imgs["wave1"][2].Ref()
	start := time.Now()
	out, err := su.stevedore(ctx, "pull", "--nats", su.s.natsURL(""), ref)
	if err != nil {
		su.sum.cli.Pull = "failed: " + err.Error()
		t.Fatalf("stevedore pull: %v\n%s", err, out)
	}
	su.sum.cli.Pull = fmt.Sprintf("stevedore pull --nats nats://127.0.0.1:%d %s: exit 0 in %s", su.s.natsPort, ref, time.Since(start).Round(10*time.Millisecond))
}

// cacheExport exports a pull's result as a BuildKit cache to the registry
// (credentials from the mounted docker config) and to a local directory
// in the caches volume, then imports the registry cache on a new build.
func (su *suite) cacheExport(ctx context.Context, t *testing.T) {
	_, js := su.connect(t, "client", "e2e-cache")
	img := su.imgs["wave3"][0]
	build := "cached-" + randomHex(4)
	if r := pull(ctx, js, img.Ref(), build, nil); !r.OK() {
		t.Fatalf("pull to export: %s", r)
	}
	var parts []string
	for _, target := range []string{
		"type=registry,ref=" + registryHost + "/e2e/cache:" + build,
		// A local cache is written by this client, through its session.
		"type=local,dest=" + filepath.Join(t.TempDir(), build),
	} {
		out, err := client.ExportCache(ctx, js, build, events.CacheExportRequested{Target: target, Build: build}, nil)
		if err != nil || out.Exported == nil {
			t.Errorf("export %s: %v (outcome %+v)", target, err, out.CacheFailed)
			parts = append(parts, target+" failed")
			continue
		}
		e := out.Exported
		parts = append(parts, fmt.Sprintf("%s: %d records, %d layers (%d written, %d existed, %d mounted)", target, e.Records, e.Layers, e.Written, e.Existed, e.Mounted))
	}
	source := "type=registry,ref=" + registryHost + "/e2e/cache:" + build
	out, err := client.ImportCache(ctx, js, "import-"+randomHex(4), events.CacheImportRequested{Source: source}, nil)
	if err != nil || out.Imported == nil || len(out.Imported.Records) == 0 {
		t.Errorf("import %s: %v (outcome %+v)", source, err, out)
		parts = append(parts, "import failed")
	} else {
		parts = append(parts, fmt.Sprintf("imported %d records back", len(out.Imported.Records)))
	}
	su.sum.cache = strings.Join(parts, "; ")
}

// stevedore runs the CLI make build made.
func (su *suite) stevedore(ctx context.Context, args ...string) (string, error) {
	bin := envOr("STEVEDORE_E2E_CLI", filepath.Join("..", "bin", "stevedore"))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("the stevedore CLI (%s, make build makes it): %w", bin, err)
	}
	cctx, cancel := context.WithTimeoutCause(ctx, 2*time.Minute, errors.New("stevedore took over 2 minutes"))
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "STEVEDORE_NATS_URL=")
	err := cmd.Run()
	return out.String(), err
}

// secrets checks that no password of the run shows in any container's log
// or in any message of any stream (events, dead letters, advisories, KV
// buckets).
func (su *suite) secrets(ctx context.Context, t *testing.T) {
	secrets := su.s.secrets()
	cs, err := su.s.containers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var scanned int64
	for _, c := range cs {
		l, err := su.s.logs(ctx, c.ID)
		if err != nil {
			t.Error(err)
			continue
		}
		scanned += int64(len(l))
		for what, s := range secrets {
			if strings.Contains(l, s) {
				t.Errorf("the %s is in the log of %s", what, c.Name)
			}
		}
	}
	_, js := su.connect(t, "admin", "e2e-secrets")
	var msgs int
	for name := range js.StreamNames(ctx).Name() {
		cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		for left := int(info.NumPending); left > 0; {
			batch, err := cons.Fetch(min(left, 1000), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Errorf("read %s: %v", name, err)
				break
			}
			n := 0
			for m := range batch.Messages() {
				n++
				var b strings.Builder
				b.WriteString(m.Subject())
				for k, vs := range m.Headers() {
					b.WriteString(k + strings.Join(vs, ""))
				}
				b.Write(m.Data())
				scanned += int64(b.Len())
				for what, s := range secrets {
					if strings.Contains(b.String(), s) {
						t.Errorf("the %s is in a message of %s on %s", what, name, m.Subject())
					}
				}
			}
			if n == 0 {
				break
			}
			msgs += n
			left -= n
		}
	}
	su.sum.secrets = fmt.Sprintf("%d secrets searched in %d container logs and %d stream messages (%s): none found", len(secrets), len(cs), msgs, mib(scanned))
	if t.Failed() {
		su.sum.secrets = "LEAKED (see the errors above)"
	}
}

// permissions checks NATS's log: no service user and no client was refused
// anything; the watcher was, for exactly what the watcher test tried.
func (su *suite) permissions(ctx context.Context, t *testing.T) {
	l, err := su.s.serviceLogs(ctx, "nats")
	if err != nil {
		t.Fatal(err)
	}
	byUser := map[string]int{}
	for _, line := range strings.Split(l, "\n") {
		// "... - "v1.55.0:go:NAME" - "$G/user:USER" - Publish Violation - Subject ..."
		if !strings.Contains(line, "Publish Violation") && !strings.Contains(line, "Subscription Violation") {
			continue
		}
		user := "?"
		if _, rest, ok := strings.Cut(line, "/user:"); ok {
			user, _, _ = strings.Cut(rest, `"`)
		}
		byUser[user]++
		if user != "watcher" {
			t.Errorf("NATS refused user %s: %s", user, strings.TrimSpace(line))
		}
	}
	var parts []string
	for _, u := range slices.Sorted(maps.Keys(byUser)) {
		parts = append(parts, fmt.Sprintf("%s %d", u, byUser[u]))
	}
	su.sum.permissions = "violations by user: none"
	if len(parts) > 0 {
		su.sum.permissions = "violations by user: " + strings.Join(parts, ", ")
	}
	if byUser["watcher"] == 0 {
		t.Errorf("NATS logged no violation for the watcher's refused attempts")
	}
}
