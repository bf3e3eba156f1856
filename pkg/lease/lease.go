// Package lease makes work that many requests want happen once across the
// whole fleet.
//
// # Vocabulary
//
//   - A lease is a key in a JetStream KV bucket, created only if absent,
//     with a per-key TTL. Its holder renews it (a compare-and-swap write
//     that resets the TTL) every TTL/3 while it works, and deletes it when
//     done. A holder that dies stops renewing; the key expires and the
//     server writes a marker that watchers see as a delete.
//   - A Flight is single-flight on top of leases: Do(key) returns the
//     stored result for key if there is an acceptable one; otherwise the
//     caller that wins the lease runs the work and stores its result, and
//     every other caller waits for that result (or, if the holder fails or
//     dies, takes over).
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrHeld is returned by Acquire when another holder has the lease.
var ErrHeld = errors.New("lease held by another holder")

// ErrLost reports that a lease expired or was taken while its holder still
// worked: renewals stopped succeeding.
var ErrLost = errors.New("lease lost")

// Config configures a Manager.
type Config struct {
	// Bucket is the KV bucket of leases; it must exist with a
	// LimitMarkerTTL (bus.Provision creates it). Required.
	Bucket string
	// Holder names this process in lease values, for people reading the
	// bucket. Required.
	Holder string
	// TTL is how long a lease outlives its last renewal. Zero means 30s;
	// JetStream does not take less than 1s.
	TTL time.Duration
}

// Manager acquires leases in one bucket.
type Manager struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	cfg Config
}

// NewManager binds to the bucket.
func NewManager(ctx context.Context, js jetstream.JetStream, cfg Config) (*Manager, error) {
	if cfg.Bucket == "" || cfg.Holder == "" {
		return nil, errors.New("lease: bucket and holder are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("lease: TTL %s is below JetStream's 1s minimum", cfg.TTL)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", cfg.Bucket, err)
	}
	return &Manager{js: js, kv: kv, cfg: cfg}, nil
}

type value struct {
	Holder     string    `json:"holder"`
	AcquiredAt time.Time `json:"acquiredAt"`
}

// Lease is a held lease. It renews itself until Release.
type Lease struct {
	m    *Manager
	key  string
	mu   sync.Mutex
	rev  uint64
	stop chan struct{}
	done chan struct{}
	lost chan struct{}
	once sync.Once
}

// Acquire takes the lease for key, or returns ErrHeld.
func (m *Manager) Acquire(ctx context.Context, key string) (*Lease, error) {
	v, _ := json.Marshal(value{Holder: m.cfg.Holder, AcquiredAt: time.Now().UTC()})
	rev, err := m.kv.Create(ctx, key, v, jetstream.KeyTTL(m.cfg.TTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, ErrHeld
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	l := &Lease{m: m, key: key, rev: rev, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	// The renewals belong to the lease, which lives until Release, not to
	// the request that acquired it.
	go l.renew(v) //nolint:gosec // G118: see above
	return l, nil
}

// renew resets the TTL every TTL/3 with a compare-and-swap write, so a
// lease someone else took after an expiry is never overwritten.
func (l *Lease) renew(v []byte) {
	defer close(l.done)
	t := time.NewTicker(l.m.cfg.TTL / 3)
	defer t.Stop()
	subject := "$KV." + l.m.cfg.Bucket + "." + l.key
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		ctx, cancel := context.WithTimeoutCause(context.Background(), l.m.cfg.TTL/3, errors.New("lease renewal timed out"))

		ack, err := l.m.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: v},
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.m.cfg.TTL))
		cancel()
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				close(l.lost)
				return
			}
			continue // transient: try again at the next tick, before the TTL runs out
		}
		l.mu.Lock()
		l.rev = ack.Sequence
		l.mu.Unlock()
	}
}

// Lost is closed when the lease was found taken by someone else.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release stops renewing and deletes the lease (only if it is still ours).
func (l *Lease) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		select {
		case <-l.lost:
			err = ErrLost
			return
		default:
		}
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		if derr := l.m.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); derr != nil {
			err = fmt.Errorf("release %s: %w", l.key, derr)
		}
	})
	return err
}

// Held reports whether someone holds the lease for key.
func (m *Manager) Held(ctx context.Context, key string) (bool, error) {
	_, err := m.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", key, err)
	}
	return true, nil
}

// watch returns a watcher of key in the lease bucket.
func (m *Manager) watch(ctx context.Context, key string) (jetstream.KeyWatcher, error) {
	return m.kv.Watch(ctx, key)
}
