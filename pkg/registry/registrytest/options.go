package registrytest

import (
	"errors"
	"fmt"
	"time"
)

// Option configures a Registry made by New.
type Option func(*options) error

type options struct {
	// user and pass are the Basic credentials every request must carry when
	// auth is true.
	user, pass string
	auth       bool
	// latency is added before every response; zero means none.
	latency time.Duration
}

// makeOptions applies opts over the defaults and rejects bad values.
func makeOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	return o, nil
}

// RequireAuth makes every request (including the /v2/ ping) need HTTP Basic
// credentials user and pass. A request without them, or with others, gets
// 401 Unauthorized with the challenge `WWW-Authenticate: Basic realm="test"`
// and is recorded like any other request. The user must not be empty.
//
// The default is no authentication.
func RequireAuth(user, pass string) Option {
	return func(o *options) error {
		if user == "" {
			return errors.New("registrytest: RequireAuth: empty user")
		}
		o.user, o.pass, o.auth = user, pass, true
		return nil
	}
}

// WithLatency delays every response by d, which must not be negative. The
// delay ends early if the client gives up on the request.
//
// The default is no delay.
func WithLatency(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("registrytest: WithLatency: negative duration %v", d)
		}
		o.latency = d
		return nil
	}
}
