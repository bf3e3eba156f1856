package events_test

import (
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Content names exactly one kind, and says which: the kind is empty
// whenever Validate fails.
func TestContentNamesExactlyOneKind(t *testing.T) {
	t.Parallel()
	file, git, local := &events.FileContent{}, &events.GitContent{}, &events.LocalContent{}
	for _, c := range []struct {
		content events.Content
		kind    string // empty: not valid
	}{
		{events.Content{}, ""},
		{events.Content{File: file}, "file"},
		{events.Content{Git: git}, "git"},
		{events.Content{Local: local}, "local"},
		{events.Content{File: file, Git: git}, ""},
		{events.Content{Git: git, Local: local}, ""},
		{events.Content{File: file, Git: git, Local: local}, ""},
	} {
		if err := c.content.Validate(); (err == nil) != (c.kind != "") {
			t.Errorf("Validate(%+v) = %v, want ok %v", c.content, err, c.kind != "")
		}
		if got := c.content.Kind(); got != c.kind {
			t.Errorf("Kind(%+v) = %q, want %q", c.content, got, c.kind)
		}
	}
}
