package bus

import (
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Verdict is what the runtime does with a message whose handler returned an
// error.
type Verdict struct {
	// Retry is true when the message goes back with NakWithDelay(Delay);
	// false when the runtime emits a failed event and terminates it.
	Retry bool
	// Delay is the redelivery delay when Retry is set.
	Delay time.Duration
}

// Action maps a handler error and the delivery count (1 for the first
// delivery) to a Verdict. Permanent classes terminate at once; every other
// error (unclassified ones included: a transient cause is the safer guess)
// is retried with backoff until the delivery count reaches maxDeliver.
func Action(err error, delivered, maxDeliver int, backoff func(int) time.Duration) Verdict {
	if failure.Permanent(err) || (maxDeliver > 0 && delivered >= maxDeliver) {
		return Verdict{}
	}
	return Verdict{Retry: true, Delay: backoff(delivered)}
}
