package main

import (
	"runtime"
	"runtime/debug"
)

// version and commit are set at link time (make build:
// -ldflags "-X main.version=… -X main.commit=…"); a plain go build or go
// install falls back to what the build info records.
var (
	version = ""
	commit  = ""
)

// buildInfo is what --version prints.
type buildInfo struct {
	Version string
	Commit  string
	Go      string
}

// currentBuild is this binary's version, commit and Go version.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Go: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && b.Commit == "" {
				b.Commit = s.Value
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// String is the line --version prints.
func (b buildInfo) String() string {
	return "stevedore " + b.Version + ", commit " + b.Commit + ", " + b.Go
}
