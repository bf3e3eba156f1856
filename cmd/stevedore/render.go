package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// describe is the one-line human summary of an event.
func describe(e events.Event) string {
	switch p := e.Data.(type) {
	case events.SourceResolveRequested:
		return p.Source.Identifier + attrs(p.Source.Attrs)
	case events.SourceChanged:
		s := fmt.Sprintf("%s moved: %s → %s", p.Ref, p.Old, p.New)
		if p.Platform != "" {
			s += " (" + p.Platform + ")"
		}
		if p.PrepullBuild != "" {
			s += "; pre-pulling in build " + p.PrepullBuild
		}
		return s
	case events.SourceResolved:
		return fmt.Sprintf("%s (%s) → %s", p.Source.Identifier, platformOf(p.Source), p.Handler)
	case events.SourceFailed:
		return fmt.Sprintf("%s: %s [%s, %d attempt(s)]", p.Source.Identifier, p.Reason, p.Code, p.Attempts)
	case events.CacheKeyRequested:
		return fmt.Sprintf("index %d of %s", p.Index, p.Source.Identifier)
	case events.CacheKeyComputed:
		return fmt.Sprintf("index %d key %s (digest %s) missed", p.Key.Index, p.Key.Key, p.Key.Digest)
	case events.CacheHit:
		return fmt.Sprintf("index %d key %s hit: chainID %s on %s", p.Key.Index, p.Key.Key, p.Record.ChainID, orNone(p.Record.Node))
	case events.CacheMiss:
		keys := fmt.Sprintf("all %d keys missed", len(p.Keys))
		if len(p.Keys) == 1 {
			keys = "the key missed"
		}
		return keys + "; " + toFetch(p.Source, p.CacheOpts)
	case events.SnapshotRequested:
		if !isImage(p.Source) {
			return p.Source.Identifier
		}
		n := 0
		if p.CacheOpts != nil {
			n = len(p.CacheOpts.Layers)
		}
		return fmt.Sprintf("%s of %s", count(n, "layer"), p.Source.Identifier)
	case events.SnapshotReady:
		if !isImage(p.Source) {
			label, text := fetchedLine(p)
			return fmt.Sprintf("snapshot %s on %s, %s, %s %s", p.SnapshotKey, p.Node, humanBytes(p.Size), label, text)
		}
		return fmt.Sprintf("chainID %s on %s, %s, fetched %s, %s reused", orNone(p.ChainID), p.Node, humanBytes(p.Size), count(p.Fetched, "blob"), count(p.Reused, "layer"))
	case events.SnapshotFailed:
		return fmt.Sprintf("%s: %s [%s, %d attempt(s)]", p.Source.Identifier, p.Reason, p.Code, p.Attempts)
	case events.CacheExportRequested:
		return describeExportRequest(p)
	case events.CacheExported:
		if p.Manifest.Digest == "" {
			return fmt.Sprintf("%s: nothing exported: %s", p.Target, p.Warning)
		}
		return fmt.Sprintf("%s: cache.manifest %s, %d records, %d layers (%d written, %d existed, %d mounted)",
			p.Target, p.Manifest.Digest, p.Records, p.Layers, p.Written, p.Existed, p.Mounted)
	case events.CacheImportRequested:
		return p.Source
	case events.CacheImported:
		if p.Warning != "" {
			return fmt.Sprintf("%s: nothing imported: %s", p.Source, p.Warning)
		}
		return fmt.Sprintf("%s: manifest %s (%s), %d records, %d dropped", p.Source, p.Manifest.Digest, p.MediaType, len(p.Records), p.Dropped)
	case events.CacheExportFailed:
		return fmt.Sprintf("%s [%s, %d attempt(s)]", p.Reason, p.Code, p.Attempts)
	case events.CacheImportFailed:
		return fmt.Sprintf("%s [%s, %d attempt(s)]", p.Reason, p.Code, p.Attempts)
	case events.Progress:
		s := p.ID
		if p.Total > 0 {
			s += fmt.Sprintf(" %s / %s", humanBytes(p.Current), humanBytes(p.Total))
		}
		if p.Started != nil && p.Completed != nil {
			s += fmt.Sprintf(" done in %s", p.Completed.Sub(*p.Started).Round(time.Millisecond))
		}
		if p.Error != "" {
			s += " error: " + p.Error
		}
		return s
	}
	return ""
}

func describeExportRequest(p events.CacheExportRequested) string {
	var parts []string
	if p.Build != "" {
		parts = append(parts, "results of build "+p.Build)
	}
	if len(p.Keys) > 0 {
		parts = append(parts, fmt.Sprintf("%d keys", len(p.Keys)))
	}
	return p.Target + " (" + strings.Join(parts, ", ") + ")"
}

func attrs(a map[string]string) string {
	if len(a) == 0 {
		return ""
	}
	parts := make([]string, 0, len(a))
	for k, v := range a {
		parts = append(parts, k+"="+v)
	}
	return " [" + strings.Join(parts, ",") + "]"
}

func platformOf(op events.SourceOp) string {
	if op.Platform == nil {
		return "default platform"
	}
	s := op.Platform.OS + "/" + op.Platform.Architecture
	if op.Platform.Variant != "" {
		s += "/" + op.Platform.Variant
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(no node)"
	}
	return s
}

// printPlain writes an event as one line: time, short name, summary.
func printPlain(w io.Writer, e events.Event) {
	fmt.Fprintf(w, "%s %-24s %s\n", e.Time.Local().Format("15:04:05.000"), events.NameOf(e.Type()), describe(e))
}

// jsonEvent is the --json form of an event: the CloudEvents attributes and
// the payload.
type jsonEvent struct {
	ID          string         `json:"id"`
	Type        events.Type    `json:"type"`
	Source      string         `json:"source"`
	Subject     string         `json:"subject"`
	Time        time.Time      `json:"time"`
	CausationID string         `json:"causationid,omitempty"`
	Data        events.Payload `json:"data"`
}

func printJSON(w io.Writer, e events.Event) error {
	return json.NewEncoder(w).Encode(jsonEvent{ID: e.ID, Type: e.Type(), Source: e.Source, Subject: e.BuildID,
		Time: e.Time, CausationID: e.CausationID, Data: e.Data})
}
