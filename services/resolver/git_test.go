package resolver_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

// git sources go to the puller in BuildKit's canonical form: the remote's
// host and path (git.fullurl's when set), scheme, credentials and query
// dropped, and the attributes as given.
func TestResolveGit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   events.SourceOp
		want string
	}{
		{"tag", events.SourceOp{Identifier: "git://github.com/moby/buildkit#v0.13.0"}, "git://github.com/moby/buildkit#v0.13.0"},
		{"credentials and subdir", events.SourceOp{Identifier: "git://https://user:token@example.com/a/b.git?x=1#main:docs/"},
			"git://example.com/a/b.git#main:docs"},
		{"full URL", events.SourceOp{Identifier: "git://127.0.0.1/repo.git#v1",
			Attrs: map[string]string{source.AttrFullRemoteURL: "git://127.0.0.1:9418/repo.git", source.AttrKeepGitDir: "true"}},
			"git://127.0.0.1:9418/repo.git#v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolver.NewHandler(linuxAMD64).Resolve(t.Context(), events.SourceResolveRequested{Source: tc.in, Snapshot: true})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			want := events.SourceOp{Identifier: tc.want, Attrs: tc.in.Attrs, Platform: &linuxAMD64}
			wantOut := []events.Event{
				events.New(events.SourceResolved{Source: want, Scheme: source.SchemeGit, Handler: events.ComponentPuller, Snapshot: true}),
				events.New(events.CacheKeyRequested{Source: want, Index: 0, Snapshot: true}),
			}
			if diff := cmp.Diff(wantOut, got); diff != "" {
				t.Errorf("Resolve outputs (-want +got):\n%s", diff)
			}
		})
	}
}
