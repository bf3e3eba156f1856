package resolver

import (
	"context"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Handler is the source manager: it parses identifiers, checks that a
// service handles the scheme and starts the key loop at index 0.
type Handler struct {
	manager  *source.Manager[string]
	platform ocispec.Platform
}

// NewHandler returns a Handler whose manager routes every scheme to the
// service that computes its keys (the scheme table's Route), and that
// fills in platform when a request names none.
func NewHandler(platform ocispec.Platform) *Handler {
	m := source.NewManager[string]()
	for _, s := range source.SchemeTable() {
		m.Register(s.Route, s.Name)
	}
	return &Handler{manager: m, platform: platforms.Normalize(platform)}
}

// Resolve handles source.resolve.requested. Bad input (no "://", an unknown
// scheme, a scheme nobody handles, a bad reference or attribute) fails the
// build with BuildKit's own message.
func (h *Handler) Resolve(ctx context.Context, in events.SourceResolveRequested) ([]events.Event, error) {
	// Credentials in a URL end the build here, as an output rather than
	// an error: a failure would be terminated and its input (the URL
	// included) copied to the dead-letter stream; the failure event
	// repeats the source without them.
	if err := source.RefuseCredentials(in.Source); err != nil {
		// And the request itself goes from the events stream, once
		// the failure is out.
		bus.Erase(ctx)
		return []events.Event{events.New(events.SourceFailed{
			Source: source.WithoutCredentials(in.Source), Step: events.TypeSourceResolveRequested,
			Reason: err.Error(), Code: failure.Code(failure.Invalid(err)), Attempts: 1,
		})}, nil
	}
	// A request naming a client session acts only when that session's
	// key signed it: otherwise any client could publish one on another's
	// build and have the fleet read that build's session for it.
	if err := session.VerifyInput(ctx, in); err != nil {
		return nil, failure.Invalid(err)
	}
	id, err := h.manager.Identifier(in.Source)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	handler, err := h.manager.Resolve(id)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	if in.Session != "" {
		if err := events.ValidateSessionID(in.Session); err != nil {
			return nil, failure.Invalid(fmt.Errorf("build session: %w", err))
		}
	}
	canonical := events.SourceOp{Identifier: id.String(), Attrs: in.Source.Attrs, Platform: in.Source.Platform}
	if canonical.Platform == nil {
		p := h.platform
		canonical.Platform = &p
	}
	return []events.Event{
		events.New(events.SourceResolved{Source: canonical, Scheme: id.Scheme(), Handler: handler, Snapshot: in.Snapshot, Session: in.Session}),
		events.New(events.CacheKeyRequested{Source: canonical, Index: 0, Snapshot: in.Snapshot, Session: in.Session}),
	}, nil
}
