//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// summary holds the figures the suite logs at its end, passed or failed.
type summary struct {
	startup  time.Duration
	pushed   string
	wave3    waveFigures
	wave1    waveFigures
	chaos    chaosFigures
	restart  restartFigures
	poison   poisonFigures
	watcher  watcherFigures
	cli      cliFigures
	cache    string
	secrets  string
	teardown string

	permissions string
}

func (s *summary) log(t *testing.T, total time.Duration) {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("")
	line("==== Stevedore compose stack, end to end: summary ====")
	line("stack        up and healthy in %s (3 pullers, 3 snapshotters); pushed %s", s.startup.Round(100*time.Millisecond), s.pushed)
	for _, w := range []struct {
		name string
		f    waveFigures
	}{{"wave x3", s.wave3}, {"wave x1", s.wave1}} {
		if w.f.Requested == 0 {
			line("%-12s not run", w.name)
			continue
		}
		line("%-12s %d/%d pulls completed in %s with %d puller(s) and as many snapshotters (snapshots: %d made, %d followed, %d found made; %d cache hits)",
			w.name, w.f.Complete, w.f.Requested, w.f.Took.Round(10*time.Millisecond), w.f.Replicas, w.f.Made, w.f.Followed, w.f.Reused, w.f.Hit)
		line("%-12s registry GETs per manifest and blob: min %d, max %d over %d objects; %d HEADs, %d auth challenges (401)",
			"", w.f.GetsMin, w.f.GetsMax, w.f.Objects, w.f.Heads, w.f.Challenges)
	}
	if s.wave3.Took > 0 && s.wave1.Took > 0 {
		line("%-12s 3 replicas vs 1: %s vs %s (x%.2f)", "scaling", s.wave3.Took.Round(10*time.Millisecond), s.wave1.Took.Round(10*time.Millisecond),
			float64(s.wave1.Took)/float64(s.wave3.Took))
	}
	c := s.chaos
	if c.Requested > 0 {
		line("kill         %d/%d pulls completed in %s", c.Complete, c.Requested, c.Took.Round(10*time.Millisecond))
		line("             snapshotter %s; that image's snapshot was ready %s after the kill", orNone(c.Snapshotter), c.ReadyAfterKill.Round(10*time.Millisecond))
		line("             puller %s; puller consumer ack-pending just after: %d", orNone(c.Puller), c.PullerAckPending)
		line("             restarted by docker's restart policy: %s (the rest by the test, 3s after the kill)", orNone(strings.Join(c.RestartedByDocker, ", ")))
		line("             layer GETs: at most %d per blob by one snapshotter; fleet-wide at most %d per blob, %d blobs fetched whole more than once, %d transfers cut by the kill",
			c.NodeGetsMax, c.FleetGetsMax, c.FleetRefetched, c.Interrupted)
		for _, st := range c.Stores {
			line("             store %s (%s): %d committed snapshots, %d active, %d corrupt", st.Container, st.Kind, len(st.Committed), st.Active, len(st.Corrupt))
		}
	} else {
		line("kill         not run")
	}
	r := s.restart
	if r.Requested > 0 {
		line("nats restart %d/%d builds completed in %s; restarted %s in, healthy again %s later; %d service connections back within %s",
			r.Complete, r.Requested, r.Took.Round(10*time.Millisecond), r.RestartAt.Round(10*time.Millisecond), r.Down.Round(10*time.Millisecond),
			r.Connections, r.Reconnected.Round(10*time.Millisecond))
	} else {
		line("nats restart not run")
	}
	p := s.poison
	if p.Published > 0 {
		line("poison       %d/%d malformed requests dead-lettered (%s); %d pulls in %s among them vs %s without",
			p.DeadLettered, p.Published, strings.Join(p.Deliveries, ", "), p.Pulls, p.WithPoison.Round(10*time.Millisecond), p.Baseline.Round(10*time.Millisecond))
	} else {
		line("poison       not run")
	}
	w := s.watcher
	line("watcher      replayed %d events; live subscription %s; publish refused %s; durable consumer create refused %s, pull refused %s; stevedore watch %s",
		w.Replayed, yes(w.Live), yes(w.PublishDenied), yes(w.DurableDenied), yes(w.StealDenied), yes(w.CLIOK))
	line("cli          %s", orNone(s.cli.Pull))
	line("cache        %s", orNone(s.cache))
	line("secrets      %s", orNone(s.secrets))
	line("nats         %s", orNone(s.permissions))
	line("teardown     %s", orNone(s.teardown))
	line("total        %s", total.Round(time.Second))
	t.Log(b.String())
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
