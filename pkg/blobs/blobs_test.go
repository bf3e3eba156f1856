package blobs_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

type noRegistry struct{}

func (noRegistry) Open(context.Context, string, ocispec.Descriptor) (io.ReadCloser, error) {
	return nil, errors.New("no registry in this test")
}

func layoutWith(t *testing.T, data []byte) (*ocilayout.Layout, ocispec.Descriptor) {
	t.Helper()
	l, err := ocilayout.Create(filepath.Join(t.TempDir(), "layout"))
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if _, err := l.WriteBlobBytes(t.Context(), desc, data); err != nil {
		t.Fatal(err)
	}
	return l, desc
}

// TestSessionLocation: a session location is read through the session
// reader; once the session is gone the next location serves; without a
// session reader the location is skipped with ErrNoLocation.
func TestSessionLocation(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	data := []byte("content served by a client")
	l, desc := layoutWith(t, data)
	serving, _ := env.Connect(t, "client")
	stores, err := store.NewServer(map[string]*ocilayout.Layout{"app": l})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.Serve(t.Context(), serving, "s1", session.Config{Protocols: []session.Protocol{stores}})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := session.NewClient(env.NC)
	if err != nil {
		t.Fatal(err)
	}
	r := blobs.NewReader(noRegistry{}).WithSessions(store.NewClient(sc))
	at := events.BlobLocation{Session: "s1", Store: "app"}

	read := func(r *blobs.Reader, locs ...events.BlobLocation) (string, events.BlobLocation, error) {
		rc, loc, err := r.Open(t.Context(), locs, desc)
		if err != nil {
			return "", loc, err
		}
		defer func() { _ = rc.Close() }()
		b, err := io.ReadAll(rc)
		return string(b), loc, err
	}
	got, loc, err := read(r, at)
	if err != nil || got != string(data) || loc != at {
		t.Fatalf("read = %q from %v, %v", got, loc, err)
	}
	if at.String() != "session s1 store app" {
		t.Errorf("String() = %q", at.String())
	}

	_, _, err = read(blobs.NewReader(noRegistry{}), at)
	if !errors.Is(err, blobs.ErrNoLocation) {
		t.Errorf("without a session reader: %v, want ErrNoLocation", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	_, _, err = read(r, at)
	var nse *session.NoSessionError
	if !errors.As(err, &nse) || !failure.Permanent(err) {
		t.Errorf("gone session: %v, want *session.NoSessionError", err)
	}
	fallback := events.BlobLocation{Layout: l.Root()}
	got, loc, err = read(r, at, fallback)
	if err != nil || got != string(data) || loc != fallback {
		t.Errorf("fallback read = %q from %v, %v", got, loc, err)
	}
}
