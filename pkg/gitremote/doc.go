// Package gitremote reads git repositories over the network with go-git, so
// it needs no git binary (the services run in FROM scratch images).
//
// # Vocabulary
//
//   - A remote is the URL of a repository: http://, https:// or git://.
//     A URL's user and password are refused (they would end up in events
//     and logs); credentials come as an Auth instead: the Authorization
//     header a client's secret gives (BuildKit's git.authtokensecret and
//     git.authheadersecret), sent to the http and https remotes in its
//     scope. There are no forwarded SSH keys yet.
//   - List is `git ls-remote`: every ref the remote advertises, annotated
//     tags also peeled ("refs/tags/v2^{}"), HEAD with its target branch.
//   - A Cache is a directory of bare repositories, one per remote, named by
//     the sha256 of the remote URL. Each is used by one caller at a time
//     (per process; a data dir belongs to one process). A fetch asks only
//     for what the repository lacks: it skips the network when the commit is
//     already there, and otherwise sends every local ref as a "have", so
//     the remote sends the missing objects only.
//   - Cache.Checkout writes the tree of a commit into a directory, the way
//     BuildKit's git source checks it out: files with their modes,
//     executable bits and symlinks, one subdirectory only when asked,
//     submodules (recursively, from the URLs in .gitmodules) unless skipped,
//     a .git directory holding the commit and its ref when asked, and file
//     times set to the commit time when asked.
//
// Errors are *Error values whose failure.Kind makes them match a failure
// class (failure.ErrNotFound, failure.ErrUnauthorized, failure.ErrInvalid,
// failure.ErrUnreachable, failure.ErrUnavailable) with errors.Is.
package gitremote
