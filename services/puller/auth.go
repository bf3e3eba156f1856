package puller

import (
	"context"
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
)

// Secrets reads the Authorization header of a source's requests from the
// build's client session (pkg/session). The header is used for the
// request at hand and kept nowhere.
type Secrets interface {
	// Authorization returns the header the secrets of a give, "" for
	// none. Errors: a Required secret that cannot be read (permanent,
	// BuildKit's "failed to retrieve HTTP auth secret …"), or a failed
	// request (retryable).
	Authorization(ctx context.Context, a events.Auth) (string, error)
}

var (
	_ Secrets = (*secret.Client)(nil)
	_ Secrets = secret.Sessionless{}
)

// WithSecrets makes git and http sources read their credentials through
// s (git.authtokensecret, git.authheadersecret, http.authheadersecret and
// the per-host http secrets). The default is secret.Sessionless: remotes
// and URLs are read without credentials, and an http source with an
// http.authheadersecret fails.
func WithSecrets(s Secrets) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("puller: WithSecrets: nil secrets")
		}
		o.secrets = s
		return nil
	}
}

// authorization is the header a gives this replica's requests; "" for a
// nil a.
func (h *Handler) authorization(ctx context.Context, a *events.Auth) (string, error) {
	if a == nil {
		return "", nil
	}
	return h.secrets.Authorization(ctx, *a)
}
