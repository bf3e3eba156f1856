package events

import (
	"fmt"
	"strings"
)

// SubjectRoot is the first token of every build event subject.
const SubjectRoot = "stevedore.build"

// DLQSubjectRoot is the first tokens of every dead-letter subject:
// stevedore.dlq.<consumer>.
const DLQSubjectRoot = "stevedore.dlq"

// JetStream resources. Their names are part of the deployment's state:
// renaming a stream orphans what it stores, and renaming a durable consumer
// makes the fleet start a new one that redelivers everything from the start.
const (
	// StreamEvents holds every build event (Limits retention, so watchers can
	// replay a build and each service's consumer keeps its own position).
	StreamEvents = "STEVEDORE_EVENTS"
	// StreamAdvisories captures JetStream's MSG_TERMINATED and MAX_DELIVERIES
	// advisories for StreamEvents, so dead letters survive a restart of
	// whoever moves them.
	StreamAdvisories = "STEVEDORE_ADVISORIES"
	// StreamDLQ holds a copy of every event that a consumer gave up on.
	StreamDLQ = "STEVEDORE_DLQ"

	// ConsumerResolver is the resolver's durable consumer, shared by all its
	// replicas.
	ConsumerResolver = "resolver"
	// ConsumerPuller is the puller's durable consumer.
	ConsumerPuller = "puller"
	// ConsumerSnapshotter is the snapshotter's durable consumer.
	ConsumerSnapshotter = "snapshotter"
	// ConsumerExporter is the exporter's durable consumer.
	ConsumerExporter = "exporter"
	// ConsumerDLQ is the dead-letter mover's durable consumer on
	// StreamAdvisories.
	ConsumerDLQ = "dlq"

	// BucketCacheIndex is the KV bucket of cache records, keyed by solver
	// digest.
	BucketCacheIndex = "stevedore-cache"
	// BucketManifests is the KV bucket where pullers share tag resolutions
	// and the CacheOpts of resolved manifests.
	BucketManifests = "stevedore-manifests"
	// BucketLeases is the KV bucket of leases: who in the fleet is doing a
	// piece of work that must be done once.
	BucketLeases = "stevedore-leases"
	// BucketSnapshots is the KV bucket of snapshots by chainID: which node
	// holds each, so that concurrent requests build it once.
	BucketSnapshots = "stevedore-snapshots"
	// BucketHTTP is the KV bucket where pullers share what each http or
	// https source served when they last asked: per URL (BuildKit's URL
	// hash), the ETags seen with the digest, Last-Modified time and file
	// name of each, so that any replica revalidates with If-None-Match
	// instead of downloading again, and concurrent requests of one URL
	// download it once.
	BucketHTTP = "stevedore-http"
	// BucketWatches is the KV bucket of the watched tags (stevedore
	// watch-tags): per reference, the digest the fleet last saw, and the
	// round that claims each watch interval for one replica.
	BucketWatches = "stevedore-watches"
	// BucketFleet is the KV bucket of the fleet's own secrets, which only
	// the services may read (deploy/nats.conf): the key the fallback ids
	// of their events are made with (bus.ReissueID).
	BucketFleet = "stevedore-fleet"
)

// MaxBuildIDLen bounds build ids, which are subject tokens.
const MaxBuildIDLen = 128

// ValidateBuildID checks that id can be a subject token: 1 to MaxBuildIDLen
// characters from [A-Za-z0-9_-].
func ValidateBuildID(id string) error { return validateToken("build id", id, MaxBuildIDLen) }

// MaxSessionIDLen bounds client session ids (SourceResolveRequested's
// Session), which are subject tokens of stevedore.session.<id>.<op>.
const MaxSessionIDLen = 128

// ValidateSessionID checks that id can be a session's subject token: 1
// to MaxSessionIDLen characters from [A-Za-z0-9_-]. A session id that held
// a "." would name another session's subjects.
func ValidateSessionID(id string) error { return validateToken("session id", id, MaxSessionIDLen) }

// validateToken checks that id, a what, is 1 to maxLen characters from
// [A-Za-z0-9_-]; the error matches ErrInvalid.
func validateToken(what, id string, maxLen int) error {
	if id == "" || len(id) > maxLen {
		return fmt.Errorf("%s %q: must be 1 to %d characters: %w", what, id, maxLen, ErrInvalid)
	}
	for _, r := range id {
		ok := r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits, '-' and '_' are allowed: %w", what, id, ErrInvalid)
		}
	}
	return nil
}

// Subject is the NATS subject an event of type t for a build travels on.
// It panics on an unknown type, which is a programming error.
func Subject(buildID string, t Type) string {
	s, ok := Lookup(t)
	if !ok {
		panic(fmt.Sprintf("events: unknown type %q", t))
	}
	return SubjectRoot + "." + buildID + "." + s.Name
}

// TypeFilter is the subject filter matching events of type t in every
// build: what a service's consumer filters on.
func TypeFilter(t Type) string {
	return SubjectRoot + ".*." + NameOf(t)
}

// BuildFilter is the subject filter matching every event of one build: what
// a watcher subscribes to.
func BuildFilter(buildID string) string {
	return SubjectRoot + "." + buildID + ".>"
}

// SplitSubject returns the build id and short name of a build event subject.
func SplitSubject(subject string) (buildID, name string, err error) {
	rest, ok := strings.CutPrefix(subject, SubjectRoot+".")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s: %w", subject, SubjectRoot, ErrInvalid)
	}
	buildID, name, ok = strings.Cut(rest, ".")
	if !ok || name == "" {
		return "", "", fmt.Errorf("subject %q has no event name: %w", subject, ErrInvalid)
	}
	if err := ValidateBuildID(buildID); err != nil {
		return "", "", err
	}
	return buildID, name, nil
}

// DLQSubject is the subject of a dead letter given up by consumer.
func DLQSubject(consumer string) string { return DLQSubjectRoot + "." + consumer }
