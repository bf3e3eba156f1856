package main

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// count is "1 layer", "2 layers": n and the noun, plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// isImage reports whether a source is an image (its content is layers);
// a file, a git checkout or a local directory is not.
func isImage(op events.SourceOp) bool {
	return strings.HasPrefix(op.Identifier, source.SchemeDockerImage+"://") ||
		strings.HasPrefix(op.Identifier, source.SchemeOCILayout+"://")
}

// isLocal reports whether a source is a local directory of a session.
func isLocal(op events.SourceOp) bool {
	return strings.HasPrefix(op.Identifier, source.SchemeLocal+"://")
}

// toFetch is what a miss of op leaves to fetch: its layers for an image,
// its files for a local directory, its content otherwise.
func toFetch(op events.SourceOp, opts *events.CacheOpts) string {
	switch {
	case isImage(op):
		n := 0
		if opts != nil {
			n = len(opts.Layers)
		}
		return count(n, "layer") + " to fetch"
	case isLocal(op):
		return "files to transfer"
	}
	return "content to fetch"
}

// fetchedLine is what the summary says a snapshot took.
func fetchedLine(r events.SnapshotReady) (label, text string) {
	switch {
	case isLocal(r.Source) && r.Fetched == 0 && r.Linked == 0 && r.Reused > 0:
		return "sent", "nothing (this content was transferred before)"
	case isLocal(r.Source) && r.Linked > 0:
		return "sent", fmt.Sprintf("%s (%s linked from the last transfer)", count(r.Fetched, "file"), count(r.Linked, "unchanged file"))
	case isLocal(r.Source):
		return "sent", count(r.Fetched, "file")
	case isImage(r.Source):
		return "fetched", fmt.Sprintf("%s (%d of %s were already unpacked)", count(r.Fetched, "blob"), r.Reused, count(len(r.Layers), "layer"))
	case r.Fetched == 0:
		return "fetched", "nothing (the snapshot was there)"
	}
	return "fetched", "the content"
}

// platformWarning says that the image's own platform is not the one asked
// for (a single-platform image is used as it is, as BuildKit does); empty
// when it is.
func platformWarning(out client.Outcome) string {
	var opts *events.CacheOpts
	switch {
	case out.Miss != nil:
		opts = out.Miss.CacheOpts
	case out.Hit != nil:
		opts = out.Hit.CacheOpts
	}
	if opts == nil || opts.ImagePlatform == nil {
		return ""
	}
	return fmt.Sprintf("the image is %s, not %s: it has one platform, used as it is (as BuildKit does)",
		platforms.FormatAll(*opts.ImagePlatform), platforms.FormatAll(opts.Platform))
}
