package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
)

// Type is a CloudEvents type: reverse-DNS, then the event name, then a
// version that changes only when the payload changes incompatibly.
type Type string

// The event types of the flow. Their payloads are the structs of the same
// name in payloads.go.
const (
	TypeSourceResolveRequested Type = "dev.stevedore.source.resolve.requested.v1"
	TypeSourceResolved         Type = "dev.stevedore.source.resolved.v1"
	TypeSourceFailed           Type = "dev.stevedore.source.failed.v1"
	TypeCacheKeyRequested      Type = "dev.stevedore.cachekey.requested.v1"
	TypeCacheKeyComputed       Type = "dev.stevedore.cachekey.computed.v1"
	TypeCacheHit               Type = "dev.stevedore.cache.hit.v1"
	TypeCacheMiss              Type = "dev.stevedore.cache.miss.v1"
	TypeSnapshotRequested      Type = "dev.stevedore.snapshot.requested.v1"
	TypeSnapshotReady          Type = "dev.stevedore.snapshot.ready.v1"
	TypeSnapshotFailed         Type = "dev.stevedore.snapshot.failed.v1"
	TypeProgress               Type = "dev.stevedore.progress.v1"
	TypeCacheExportRequested   Type = "dev.stevedore.cache.export.requested.v1"
	TypeCacheExported          Type = "dev.stevedore.cache.exported.v1"
	TypeCacheExportFailed      Type = "dev.stevedore.cache.export.failed.v1"
	TypeCacheImportRequested   Type = "dev.stevedore.cache.import.requested.v1"
	TypeCacheImported          Type = "dev.stevedore.cache.imported.v1"
	TypeCacheImportFailed      Type = "dev.stevedore.cache.import.failed.v1"
	TypeSourceChanged          Type = "dev.stevedore.source.changed.v1"
)

// Payload is the typed body of an event. Every payload struct names its own
// type, so handlers never spell type strings.
type Payload interface {
	EventType() Type
}

// EventType implements Payload.
func (SourceResolveRequested) EventType() Type { return TypeSourceResolveRequested }

// EventType implements Payload.
func (SourceResolved) EventType() Type { return TypeSourceResolved }

// EventType implements Payload.
func (SourceFailed) EventType() Type { return TypeSourceFailed }

// EventType implements Payload.
func (CacheKeyRequested) EventType() Type { return TypeCacheKeyRequested }

// EventType implements Payload.
func (CacheKeyComputed) EventType() Type { return TypeCacheKeyComputed }

// EventType implements Payload.
func (CacheHit) EventType() Type { return TypeCacheHit }

// EventType implements Payload.
func (CacheMiss) EventType() Type { return TypeCacheMiss }

// EventType implements Payload.
func (SnapshotRequested) EventType() Type { return TypeSnapshotRequested }

// EventType implements Payload.
func (SnapshotReady) EventType() Type { return TypeSnapshotReady }

// EventType implements Payload.
func (SnapshotFailed) EventType() Type { return TypeSnapshotFailed }

// EventType implements Payload.
func (Progress) EventType() Type { return TypeProgress }

// EventType implements Payload.
func (CacheExportRequested) EventType() Type { return TypeCacheExportRequested }

// EventType implements Payload.
func (CacheExported) EventType() Type { return TypeCacheExported }

// EventType implements Payload.
func (CacheExportFailed) EventType() Type { return TypeCacheExportFailed }

// EventType implements Payload.
func (CacheImportRequested) EventType() Type { return TypeCacheImportRequested }

// EventType implements Payload.
func (CacheImported) EventType() Type { return TypeCacheImported }

// EventType implements Payload.
func (CacheImportFailed) EventType() Type { return TypeCacheImportFailed }

// EventType implements Payload.
func (SourceChanged) EventType() Type { return TypeSourceChanged }

// Spec is one row of the catalog.
type Spec struct {
	// Type is the CloudEvents type.
	Type Type
	// Name is the short name; it is the last tokens of the NATS subject
	// (stevedore.build.<buildID>.<Name>).
	Name string
	// Producers are the components that emit the event.
	Producers []string
	// Consumers are the components that act on it. Watchers (stevedore
	// watch, nats sub) see every event and are not listed.
	Consumers []string
	// Summary says what the event means, in one sentence.
	Summary string
	// Terminal marks an event that ends its build whatever the build asked
	// for (a cache.hit only when the client wants no snapshot: a pull goes
	// on to snapshot.ready).
	Terminal bool
	// payload is a zero value of the payload type.
	payload Payload
}

// PayloadFields lists the JSON field names of the spec's payload, in
// declaration order.
func (s Spec) PayloadFields() []string {
	t := reflect.TypeOf(s.payload)
	fields := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := cutComma(t.Field(i).Tag.Get("json"))
		fields = append(fields, name)
	}
	return fields
}

// PayloadName is the Go name of the spec's payload type.
func (s Spec) PayloadName() string { return reflect.TypeOf(s.payload).Name() }

func cutComma(tag string) (string, string, bool) {
	for i := range len(tag) {
		if tag[i] == ',' {
			return tag[:i], tag[i+1:], true
		}
	}
	return tag, "", false
}

// newPayload decodes data into a fresh value of the spec's payload type.
func (s Spec) decodePayload(data []byte) (Payload, error) {
	ptr := reflect.New(reflect.TypeOf(s.payload))
	if err := json.Unmarshal(data, ptr.Interface()); err != nil {
		return nil, fmt.Errorf("decode %s payload: %w", s.Name, err)
	}
	return ptr.Elem().Interface().(Payload), nil
}

// The component names used in the catalog and as CloudEvents sources.
const (
	ComponentClient      = "client"
	ComponentResolver    = "resolver"
	ComponentPuller      = "puller"
	ComponentSnapshotter = "snapshotter"
	ComponentExporter    = "exporter"
	ComponentRuntime     = "bus runtime"
)

var catalog = []Spec{
	{
		Type: TypeSourceResolveRequested, Name: "source.resolve.requested",
		Producers: []string{ComponentClient, ComponentSnapshotter}, Consumers: []string{ComponentResolver},
		Summary: "A client asks for a source; this starts a build. A snapshotter replica is the client of the builds of its builders' remote snapshots.",
		payload: SourceResolveRequested{},
	},
	{
		Type: TypeSourceResolved, Name: "source.resolved",
		Producers: []string{ComponentResolver}, Consumers: nil,
		Summary: "The identifier parsed and validated; names the handler that continues.",
		payload: SourceResolved{},
	},
	{
		Type: TypeSourceFailed, Name: "source.failed",
		Producers: []string{ComponentResolver, ComponentPuller, ComponentRuntime}, Consumers: nil, Terminal: true,
		Summary: "The build failed for good: bad input, or retries exhausted.",
		payload: SourceFailed{},
	},
	{
		Type: TypeCacheKeyRequested, Name: "cachekey.requested",
		Producers: []string{ComponentResolver, ComponentPuller}, Consumers: []string{ComponentPuller},
		Summary: "Compute the key of one index; from index 1 on it carries CacheOpts.",
		payload: CacheKeyRequested{},
	},
	{
		Type: TypeCacheKeyComputed, Name: "cachekey.computed",
		Producers: []string{ComponentPuller}, Consumers: nil,
		Summary: "A key was computed and missed in the cache index.",
		payload: CacheKeyComputed{},
	},
	{
		Type: TypeCacheHit, Name: "cache.hit",
		Producers: []string{ComponentPuller}, Consumers: nil, Terminal: true,
		Summary: "A key was found in the cache index; the source is done.",
		payload: CacheHit{},
	},
	{
		Type: TypeCacheMiss, Name: "cache.miss",
		Producers: []string{ComponentPuller}, Consumers: nil,
		Summary: "Every index missed; carries all keys and what to fetch.",
		payload: CacheMiss{},
	},
	{
		Type: TypeSnapshotRequested, Name: "snapshot.requested",
		Producers: []string{ComponentPuller}, Consumers: []string{ComponentSnapshotter},
		Summary: "Every key missed and the client wants the content: unpack these layers, or make the content of a source that is not an image (a file, a git checkout, a local directory from the client's session).",
		payload: SnapshotRequested{},
	},
	{
		Type: TypeSnapshotReady, Name: "snapshot.ready",
		Producers: []string{ComponentSnapshotter}, Consumers: nil, Terminal: true,
		Summary: "The snapshot exists (made, reused or followed) and is recorded under every key.",
		payload: SnapshotReady{},
	},
	{
		Type: TypeSnapshotFailed, Name: "snapshot.failed",
		Producers: []string{ComponentSnapshotter, ComponentRuntime}, Consumers: nil, Terminal: true,
		Summary: "The snapshot cannot be made: bad content, registry refusal, or retries exhausted.",
		payload: SnapshotFailed{},
	},
	{
		Type: TypeSourceChanged, Name: "source.changed",
		Producers: []string{ComponentPuller}, Consumers: nil,
		Summary: "A watched tag (stevedore watch-tags) points to another digest; published under the build id " + WatchBuildID + ", once per move for the fleet.",
		payload: SourceChanged{},
	},
	{
		Type: TypeProgress, Name: "progress",
		Producers: []string{ComponentPuller, ComponentSnapshotter, ComponentExporter}, Consumers: nil,
		Summary: "A status update with BuildKit's progress labels.",
		payload: Progress{},
	},
	{
		Type: TypeCacheExportRequested, Name: "cache.export.requested",
		Producers: []string{ComponentClient}, Consumers: []string{ComponentExporter},
		Summary: "Write a BuildKit remote cache of a build's sources (or of keys) to a layout or a registry.",
		payload: CacheExportRequested{},
	},
	{
		Type: TypeCacheExported, Name: "cache.exported",
		Producers: []string{ComponentExporter}, Consumers: nil, Terminal: true,
		Summary: "The cache is written; carries the manifest descriptor (cache.manifest).",
		payload: CacheExported{},
	},
	{
		Type: TypeCacheExportFailed, Name: "cache.export.failed",
		Producers: []string{ComponentExporter, ComponentRuntime}, Consumers: nil, Terminal: true,
		Summary: "The export cannot be done: bad target, unknown keys, an unimportable cache, or a refusal.",
		payload: CacheExportFailed{},
	},
	{
		Type: TypeCacheImportRequested, Name: "cache.import.requested",
		Producers: []string{ComponentClient}, Consumers: []string{ComponentExporter},
		Summary: "Read a BuildKit remote cache into the cache index.",
		payload: CacheImportRequested{},
	},
	{
		Type: TypeCacheImported, Name: "cache.imported",
		Producers: []string{ComponentExporter}, Consumers: nil, Terminal: true,
		Summary: "The cache's records are in the cache index, with where their blobs are.",
		payload: CacheImported{},
	},
	{
		Type: TypeCacheImportFailed, Name: "cache.import.failed",
		Producers: []string{ComponentExporter, ComponentRuntime}, Consumers: nil, Terminal: true,
		Summary: "The import cannot be done: bad source, a corrupt config, or missing blobs.",
		payload: CacheImportFailed{},
	},
}

// Catalog returns every event type, in flow order.
func Catalog() []Spec { return append([]Spec(nil), catalog...) }

// Lookup returns the spec of a type.
func Lookup(t Type) (Spec, bool) {
	for _, s := range catalog {
		if s.Type == t {
			return s, true
		}
	}
	return Spec{}, false
}

// ConsumedBy lists, in flow order, the types the catalog gives component
// to act on: its consumer's filter and the handlers it registers.
func ConsumedBy(component string) []Type {
	var types []Type
	for _, s := range catalog {
		if slices.Contains(s.Consumers, component) {
			types = append(types, s.Type)
		}
	}
	return types
}

// LookupName returns the spec whose short name is name.
func LookupName(name string) (Spec, bool) {
	for _, s := range catalog {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// NameOf returns the short name of a type, or "" if the type is unknown.
func NameOf(t Type) string {
	s, _ := Lookup(t)
	return s.Name
}

// SourceOf returns the source an event's payload is about; false for
// payloads that carry none (progress) and for nil.
func SourceOf(p Payload) (SourceOp, bool) {
	switch v := p.(type) {
	case SourceResolveRequested:
		return v.Source, true
	case SourceResolved:
		return v.Source, true
	case SourceFailed:
		return v.Source, true
	case CacheKeyRequested:
		return v.Source, true
	case CacheKeyComputed:
		return v.Source, true
	case CacheHit:
		return v.Source, true
	case CacheMiss:
		return v.Source, true
	case SnapshotRequested:
		return v.Source, true
	case SnapshotReady:
		return v.Source, true
	case SnapshotFailed:
		return v.Source, true
	}
	return SourceOp{}, false
}

// FailureType is the type of the failed event for a step: snapshot.failed
// when the snapshot step fails, cache.export.failed and cache.import.failed
// for the cache steps, source.failed for every other step.
func FailureType(step Type) Type {
	switch step {
	case TypeSnapshotRequested:
		return TypeSnapshotFailed
	case TypeCacheExportRequested:
		return TypeCacheExportFailed
	case TypeCacheImportRequested:
		return TypeCacheImportFailed
	}
	return TypeSourceFailed
}

// NewFailure returns the failed event payload for step carrying f.
func NewFailure(step Type, f SourceFailed) Payload {
	switch FailureType(step) {
	case TypeSnapshotFailed:
		return SnapshotFailed(f)
	case TypeCacheExportFailed:
		return CacheExportFailed(f)
	case TypeCacheImportFailed:
		return CacheImportFailed(f)
	}
	return f
}

// Failure returns the fields of a failed event's payload (source.failed,
// snapshot.failed, cache.export.failed or cache.import.failed); false for
// any other payload.
func Failure(p Payload) (SourceFailed, bool) {
	switch v := p.(type) {
	case SourceFailed:
		return v, true
	case SnapshotFailed:
		return SourceFailed(v), true
	case CacheExportFailed:
		return SourceFailed(v), true
	case CacheImportFailed:
		return SourceFailed(v), true
	}
	return SourceFailed{}, false
}
