package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/bus/middleware"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

var in = events.Event{ID: "e1", BuildID: "b1", Data: events.CacheKeyRequested{}}

func jsonLogger(level slog.Level) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})), &buf
}

func TestRecover(t *testing.T) {
	t.Parallel()
	log, buf := jsonLogger(slog.LevelInfo)
	h := middleware.Recover(log)(func(context.Context, events.Event) ([]events.Event, error) { panic("boom") })
	out, err := h(t.Context(), in)
	if err == nil || !strings.Contains(err.Error(), "handler panicked: boom") || out != nil {
		t.Fatalf("Recover = %v, %v", out, err)
	}
	if failure.Permanent(err) {
		t.Error("a panic must be retried, not failed at once")
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line: %v: %s", err, buf.Bytes())
	}
	if line["build_id"] != "b1" || line["event_id"] != "e1" || line["panic"] != "boom" || line["stack"] == "" {
		t.Errorf("log line = %v", line)
	}

	ok := middleware.Recover(log)(func(context.Context, events.Event) ([]events.Event, error) {
		return []events.Event{events.New(events.Progress{})}, nil
	})
	if out, err := ok(t.Context(), in); err != nil || len(out) != 1 {
		t.Errorf("Recover changed a normal result: %v %v", out, err)
	}
}

func TestLogging(t *testing.T) {
	t.Parallel()
	log, buf := jsonLogger(slog.LevelInfo)
	failing := middleware.Logging(log)(func(context.Context, events.Event) ([]events.Event, error) {
		return nil, failure.NotFound(errors.New("image not found"))
	})
	if _, err := failing(t.Context(), in); !errors.Is(err, failure.ErrNotFound) {
		t.Fatalf("Logging changed the error: %v", err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line: %v: %s", err, buf.Bytes())
	}
	for k, want := range map[string]any{"level": "WARN", "build_id": "b1", "event_id": "e1", "code": "not-found",
		"error": "image not found", "event_type": string(events.TypeCacheKeyRequested)} {
		if line[k] != want {
			t.Errorf("log %s = %v, want %v", k, line[k], want)
		}
	}

	buf.Reset()
	ok := middleware.Logging(log)(func(context.Context, events.Event) ([]events.Event, error) { return nil, nil })
	if _, err := ok(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("success logged above debug level: %s", buf.Bytes())
	}
	debugLog, dbuf := jsonLogger(slog.LevelDebug)
	if _, err := middleware.Logging(debugLog)(func(context.Context, events.Event) ([]events.Event, error) { return nil, nil })(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dbuf.String(), `"msg":"handled"`) {
		t.Errorf("no debug line for a success: %s", dbuf.Bytes())
	}
}
