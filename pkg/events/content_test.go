package events_test

import (
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

func TestContentNamesExactlyOneKind(t *testing.T) {
	t.Parallel()
	file, git, local := &events.FileContent{}, &events.GitContent{}, &events.LocalContent{}
	for _, c := range []struct {
		content events.Content
		ok      bool
	}{
		{events.Content{}, false},
		{events.Content{File: file}, true},
		{events.Content{Git: git}, true},
		{events.Content{Local: local}, true},
		{events.Content{File: file, Git: git}, false},
		{events.Content{Git: git, Local: local}, false},
		{events.Content{File: file, Git: git, Local: local}, false},
	} {
		if err := c.content.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", c.content, err, c.ok)
		}
	}
}
