package source_test

import (
	"errors"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Finding 6: sources carrying credentials in a URL are refused (so that a
// client never publishes them); logins and image references pass.
func TestSecurityRefuseCredentials(t *testing.T) {
	t.Parallel()
	refused := []events.SourceOp{
		{Identifier: "https://user:pw@example.com/file"},
		{Identifier: "http://token@example.com/file"},
		{Identifier: "git://user:pw@github.com/moby/buildkit"},
		{Identifier: "git://github.com/moby/buildkit", Attrs: map[string]string{source.AttrFullRemoteURL: "https://x:secret@github.com/moby/buildkit.git"}},
		{Identifier: "git://github.com/moby/buildkit", Attrs: map[string]string{source.AttrFullRemoteURL: "https://ghp_token@github.com/moby/buildkit.git"}},
	}
	for _, op := range refused {
		if err := source.RefuseCredentials(op); !errors.Is(err, source.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", op, err)
		}
	}
	passed := []events.SourceOp{
		{Identifier: "docker-image://docker.io/library/alpine:3.20@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
		{Identifier: "https://example.com/file?x=a@b"},
		{Identifier: "git://github.com/moby/buildkit#v0.13.0"},
		{Identifier: "git://github.com/moby/buildkit", Attrs: map[string]string{source.AttrFullRemoteURL: "ssh://git@github.com/moby/buildkit.git"}},
		{Identifier: "git://github.com/moby/buildkit", Attrs: map[string]string{source.AttrFullRemoteURL: "git@github.com:moby/buildkit.git"}},
	}
	for _, op := range passed {
		if err := source.RefuseCredentials(op); err != nil {
			t.Errorf("%+v: %v, want nil", op, err)
		}
	}
}
