package events_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

var update = flag.Bool("update", false, "rewrite the catalog table in docs/events.md")

const (
	docPath     = "../../docs/events.md"
	tableStart  = "<!-- catalog:start -->"
	tableEnd    = "<!-- catalog:end -->"
	subjectVar  = "<buildID>"
	noConsumers = "watchers only"
)

// catalogTable renders the catalog as docs/events.md shows it.
func catalogTable() string {
	var b strings.Builder
	b.WriteString("| Event (CloudEvents `type`) | NATS subject | Producers | Consumers | Ends the build | Payload: fields | Meaning |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, s := range events.Catalog() {
		consumers := strings.Join(s.Consumers, ", ")
		if consumers == "" {
			consumers = noConsumers
		}
		ends := "no"
		if s.Terminal {
			ends = "yes"
		}
		fields := make([]string, 0)
		for _, f := range s.PayloadFields() {
			fields = append(fields, "`"+f+"`")
		}
		fmt.Fprintf(&b, "| **%s**<br>`%s` | `%s` | %s | %s | %s | `%s`: %s | %s |\n",
			s.Name, s.Type, events.Subject(subjectVar, s.Type), strings.Join(s.Producers, ", "), consumers, ends,
			s.PayloadName(), strings.Join(fields, ", "), s.Summary)
	}
	return b.String()
}

// docs/events.md's table is the catalog: a change to one without the other
// fails here (go test ./pkg/events -update rewrites the table).
func TestCatalogDocumented(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	before, rest, ok1 := strings.Cut(doc, tableStart+"\n")
	table, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s has no %s … %s block", docPath, tableStart, tableEnd)
	}
	want := catalogTable()
	if table == want {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(before+tableStart+"\n"+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date; run go test ./pkg/events -run TestCatalogDocumented -update. Want:\n%s", docPath, want)
}

func TestCatalogIsConsistent(t *testing.T) {
	t.Parallel()
	seenType, seenName := map[events.Type]bool{}, map[string]bool{}
	for _, s := range events.Catalog() {
		if seenType[s.Type] || seenName[s.Name] {
			t.Errorf("duplicate %s / %s", s.Type, s.Name)
		}
		seenType[s.Type], seenName[s.Name] = true, true
		if !strings.HasPrefix(string(s.Type), "dev.stevedore."+s.Name+".v") {
			t.Errorf("type %s does not spell its name %s", s.Type, s.Name)
		}
		if got, ok := events.LookupName(s.Name); !ok || got.Type != s.Type {
			t.Errorf("LookupName(%s) = %v", s.Name, got.Type)
		}
		if len(s.Producers) == 0 || s.Summary == "" || len(s.PayloadFields()) == 0 {
			t.Errorf("%s: incomplete spec", s.Name)
		}
	}
}
