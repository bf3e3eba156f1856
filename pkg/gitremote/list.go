package gitremote

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/stevedore-dev/stevedore/pkg/source"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// ListTimeout bounds one List call: a remote that accepts the connection
// and then says nothing does not hold a request forever.
const ListTimeout = time.Minute

// List returns the refs remote advertises, as `git ls-remote` prints them:
// sorted by name, annotated tags a second time as "<tag>^{}" with the
// commit they point at, and HEAD as a symbolic ref with its target when the
// remote says (every git since 1.8.5 does).
//
// It fails with an *Error: failure.KindInvalid for a remote CheckRemote refuses,
// failure.KindNotFound for a repository that does not exist or is empty,
// failure.KindUnauthorized when the remote wants credentials (or refuses auth's),
// failure.KindUnreachable when nothing listens or a git:// remote does not speak
// git's protocol (probeGitDaemon: an http server, or no answer within
// ProbeTimeout), failure.KindUnavailable otherwise.
func List(ctx context.Context, remote string, auth Auth) ([]source.GitRef, error) {
	if err := CheckRemote(remote); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, ListTimeout, errors.New("ls-remote timed out"))
	defer cancel()
	if strings.EqualFold(remote[:strings.Index(remote, ":")], "git") {
		if err := probeGitDaemon(ctx, remote); err != nil {
			return nil, err
		}
	}
	r := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{remote}})
	refs, err := r.ListContext(ctx, &git.ListOptions{PeelingOption: git.AppendPeeled, Auth: auth.method(remote)})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return nil, remoteError(remote, err)
	}
	hashes := make(map[plumbing.ReferenceName]plumbing.Hash, len(refs))
	for _, ref := range refs {
		if ref.Type() == plumbing.HashReference {
			hashes[ref.Name()] = ref.Hash()
		}
	}
	out := make([]source.GitRef, 0, len(refs))
	for _, ref := range refs {
		switch ref.Type() {
		case plumbing.HashReference:
			out = append(out, source.GitRef{Name: ref.Name().String(), Hash: ref.Hash().String()})
		case plumbing.SymbolicReference:
			gr := source.GitRef{Name: ref.Name().String(), Target: ref.Target().String()}
			if h, ok := hashes[ref.Target()]; ok {
				gr.Hash = h.String()
			}
			out = append(out, gr)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// CheckRemote accepts the remotes this package can read: http, https and
// git URLs with a host and no user information. Anything else fails with an
// *Error of failure.KindInvalid that matches ErrUnsupportedRemote; the message
// never repeats credentials.
func CheckRemote(remote string) error {
	shown := source.RedactGitRemote(remote)
	const noSSH = "git remote %s: ssh remotes are not supported yet (they need SSH keys forwarded from the client)"
	if !strings.Contains(remote, "://") {
		if strings.Contains(remote, "@") {
			return unsupported(shown, noSSH, shown)
		}
		return unsupported(shown, "git remote %q: not an http, https or git URL", shown)
	}
	u, err := url.Parse(remote)
	if err != nil {
		return unsupported(shown, "git remote %q: not an http, https or git URL", shown)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "git":
	case "ssh":
		return unsupported(shown, noSSH, shown)
	default:
		return unsupported(shown, "git remote %s: protocol %s is not supported (want http, https or git)", shown, u.Scheme)
	}
	if u.Host == "" {
		return unsupported(shown, "git remote %q: no host", shown)
	}
	if u.User != nil {
		return unsupported(shown, "git remote %s: credentials in the URL are not supported (they would be in events and logs); give them as a client secret (git.authtokensecret, git.authheadersecret)", shown)
	}
	return nil
}

func unsupported(remote, format string, args ...any) error {
	return &Error{Remote: remote, Kind: failure.KindInvalid, Err: &unsupportedError{msg: fmt.Sprintf(format, args...)}}
}

// unsupportedError carries a message and matches ErrUnsupportedRemote.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string        { return e.msg }
func (e *unsupportedError) Is(target error) bool { return target == ErrUnsupportedRemote }
