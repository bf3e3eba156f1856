// Package registry reads images from OCI distribution registries, and
// pushes blobs and manifests to them, with containerd's resolver, fetcher
// and pusher: resolving a reference to its top-level descriptor (HEAD,
// falling back to GET), fetching manifests and configs with a size cap and
// digest verification, and opening layers as streams. Pushing (PushBlob,
// PushManifest, HasBlob) is what a remote-cache exporter needs: a blob the
// repository already has is skipped, one another repository of the same
// registry has is mounted from there when the descriptor names that
// repository (MountFrom, AnnotationDistributionSource), and anything else is
// uploaded after its size and digest are checked; a manifest or index is
// pushed by tag. PushResult says which of the three a blob push did.
//
// Vocabulary: a reference is a normalised image name with a tag and/or a
// digest (docker.io/library/alpine:3.20@sha256:…); the top-level descriptor
// is what the registry serves for it (an index or a manifest). Hosts named
// localhost, 127.0.0.1 or ::1, and hosts listed in Config.Insecure, are
// reached over plain HTTP; credentials come from a docker config.json.
//
// Every error is an *Error whose Kind says what went wrong (not found,
// unauthorized, unavailable, invalid content), so callers classify it once.
package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultMaxManifestBytes is the default cap on a manifest, index or config
// read from a registry: 4 MiB, containerd's own order of magnitude.
const DefaultMaxManifestBytes = 4 << 20

// Config configures a Client.
type Config struct {
	// DockerConfigDir is the directory holding config.json with registry
	// credentials. Empty means $DOCKER_CONFIG or ~/.docker; a missing file
	// means anonymous access.
	DockerConfigDir string
	// Insecure lists registry hosts (host or host:port) reached over plain
	// HTTP. Loopback hosts always are.
	Insecure []string
	// MaxManifestBytes caps manifests, indexes and configs. Zero means
	// DefaultMaxManifestBytes.
	MaxManifestBytes int64
	// Timeout bounds the wait for each response's headers, any pause in
	// the arrival of a body, and any pause in the registry's acceptance of
	// an upload (a blob of any size may take longer as long as bytes keep
	// moving). Zero means 30s.
	Timeout time.Duration
}

// Client talks to registries. It is safe for concurrent use and keeps
// authorization tokens across calls.
type Client struct {
	cfg      Config
	resolver remotes.Resolver
	// hosts configures every registry host (client, plain HTTP, the one
	// authorizer that keeps tokens); pushes build a resolver from it.
	hosts docker.RegistryHosts
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.MaxManifestBytes == 0 {
		cfg.MaxManifestBytes = DefaultMaxManifestBytes
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	// containerd logs through logrus at info level (every resolution); its
	// warnings are noise here too.
	_ = log.SetLevel("error")
	creds, err := loadCredentials(cfg.DockerConfigDir)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = cfg.Timeout
	client := &http.Client{Transport: transport}
	insecure := map[string]bool{}
	for _, h := range cfg.Insecure {
		insecure[h] = true
	}
	hosts := docker.ConfigureDefaultRegistries(
		docker.WithClient(client),
		docker.WithPlainHTTP(func(host string) (bool, error) {
			if insecure[host] {
				return true, nil
			}
			if h, _, err := net.SplitHostPort(host); err == nil && insecure[h] {
				return true, nil
			}
			return docker.MatchLocalhost(host)
		}),
		docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthClient(client), docker.WithAuthCreds(creds))),
	)
	return &Client{cfg: cfg, resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts}), hosts: hosts}, nil
}

// loadCredentials reads config.json once and answers containerd's
// per-host credential callback from it (credential helpers included).
func loadCredentials(dir string) (func(host string) (string, string, error), error) {
	if dir == "" {
		dir = dockerconfig.Dir()
	}
	cf, err := dockerconfig.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: docker config in %s: %w", dir, err)
	}
	return func(host string) (string, string, error) { return credentialsFor(cf, host) }, nil
}

func credentialsFor(cf *configfile.ConfigFile, host string) (string, string, error) {
	if host == "registry-1.docker.io" {
		host = "docker.io"
	}
	ac, err := cf.GetAuthConfig(host)
	if err != nil {
		return "", "", err
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}

// Resolve returns the top-level descriptor ref points at: HEAD of the tag or
// digest, GET when the registry does not send a digest.
func (c *Client) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	if err := checkRef(OpResolve, ref); err != nil {
		return ocispec.Descriptor{}, err
	}
	_, desc, err := c.resolver.Resolve(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, wrap(OpResolve, ref, err)
	}
	if desc.Size > c.cfg.MaxManifestBytes {
		return ocispec.Descriptor{}, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid,
			Err: fmt.Errorf("manifest %s is %d bytes, more than the %d-byte cap", desc.Digest, desc.Size, c.cfg.MaxManifestBytes)}
	}
	return desc, nil
}

// FetchManifest reads a manifest, index or config blob of repository ref,
// refusing more than the cap and verifying size and digest.
func (c *Client) FetchManifest(ctx context.Context, ref string, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > c.cfg.MaxManifestBytes {
		return nil, &Error{Op: OpFetch, Ref: ref, Kind: failure.KindInvalid,
			Err: fmt.Errorf("%s %s is %d bytes, more than the %d-byte cap", desc.MediaType, desc.Digest, desc.Size, c.cfg.MaxManifestBytes)}
	}
	rc, err := c.open(ctx, ref, desc)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(io.LimitReader(rc, c.cfg.MaxManifestBytes+1))
	if err != nil {
		return nil, wrap(OpFetch, ref, err)
	}
	if int64(len(data)) > c.cfg.MaxManifestBytes {
		return nil, &Error{Op: OpFetch, Ref: ref, Kind: failure.KindInvalid,
			Err: fmt.Errorf("%s is larger than the %d-byte cap", desc.Digest, c.cfg.MaxManifestBytes)}
	}
	if err := Verify(desc, data); err != nil {
		return nil, &Error{Op: OpFetch, Ref: ref, Kind: failure.KindInvalid, Err: err}
	}
	return data, nil
}

// Open streams a blob of repository ref. The request is made on the first
// Read, so failures such as a missing blob come from Read, as *Error like
// every other. The caller verifies what it reads (see Verify for small
// blobs). A descriptor whose size is unknown (negative: a blob named by its
// digest alone, as a docker-image+blob source names it) is sized first
// with a HEAD of the blob, whose failures Open returns.
func (c *Client) Open(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if desc.Size < 0 {
		size, err := c.blobSize(ctx, ref, desc.Digest)
		if err != nil {
			return nil, err
		}
		desc.Size = size
	}
	rc, err := c.open(ctx, ref, desc)
	if err != nil {
		return nil, err
	}
	return &blobReader{ReadCloser: rc, ref: ref}, nil
}

// blobSize asks ref's repository for the size of blob dgst: containerd's
// resolution of repository@dgst, which HEADs /manifests/ and then /blobs/.
// Unlike Resolve it has no cap: the blob may be a layer of any size.
func (c *Client) blobSize(ctx context.Context, ref string, dgst digest.Digest) (int64, error) {
	if err := checkRef(OpResolve, ref); err != nil {
		return 0, err
	}
	if err := dgst.Validate(); err != nil {
		return 0, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad digest %q: %w", dgst, err)}
	}
	spec, err := reference.Parse(ref)
	if err != nil {
		return 0, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad reference %q: %w", ref, err)}
	}
	byDigest := spec.Locator + "@" + dgst.String()
	_, desc, err := c.resolver.Resolve(ctx, byDigest)
	if err != nil {
		return 0, wrap(OpResolve, byDigest, err)
	}
	if desc.Digest != dgst || desc.Size < 0 {
		return 0, &Error{Op: OpResolve, Ref: byDigest, Kind: failure.KindInvalid, Err: fmt.Errorf("registry answered %s (%d bytes) for blob %s", desc.Digest, desc.Size, dgst)}
	}
	return desc.Size, nil
}

// blobReader classifies the errors of containerd's lazy blob reader.
type blobReader struct {
	io.ReadCloser
	ref string
}

func (r *blobReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = wrap(OpFetch, r.ref, err)
	}
	return n, err
}

// open is Open with containerd's errors from Read left unclassified.
func (c *Client) open(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := checkRef(OpFetch, ref); err != nil {
		return nil, err
	}
	f, err := c.resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, wrap(OpFetch, ref, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		cancel(err)
		return nil, wrap(OpFetch, ref, err)
	}
	return newStallGuard(rc, cancel, c.cfg.Timeout), nil
}

// errStalled is the cause of a read that stalled.
var errStalled = errors.New("the registry stopped sending")

// stallGuard cancels the request of a body whose Read blocks for longer
// than its timeout, which makes that Read fail instead of hanging. Time
// the caller spends between reads does not count.
type stallGuard struct {
	io.ReadCloser
	cancel  context.CancelCauseFunc
	timeout time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

func newStallGuard(rc io.ReadCloser, cancel context.CancelCauseFunc, timeout time.Duration) *stallGuard {
	g := &stallGuard{ReadCloser: rc, cancel: cancel, timeout: timeout}
	g.timer = time.AfterFunc(timeout, func() {
		g.stalled.Store(true)
		cancel(errStalled)
	})
	g.timer.Stop()
	return g
}

func (g *stallGuard) Read(p []byte) (int, error) {
	g.timer.Reset(g.timeout)
	n, err := g.ReadCloser.Read(p)
	g.timer.Stop()
	if err != nil && g.stalled.Load() {
		err = fmt.Errorf("no data for %s: %w", g.timeout, errors.Join(errStalled, context.DeadlineExceeded))
	}
	return n, err
}

func (g *stallGuard) Close() error {
	g.timer.Stop()
	err := g.ReadCloser.Close()
	g.cancel(errors.New("blob closed"))
	return err
}

// checkRef rejects, as failure.KindInvalid, a reference containerd's resolver
// cannot parse or whose digest is malformed; containerd returns plain
// errors for those, which wrap would take for network trouble.
func checkRef(op Op, ref string) error {
	spec, err := reference.Parse(ref)
	if err == nil {
		if d := spec.Digest(); d != "" {
			err = d.Validate()
		}
	}
	if err != nil {
		return &Error{Op: op, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad reference %q: %w", ref, err)}
	}
	return nil
}

// Verify checks that data has desc's size and digest.
func Verify(desc ocispec.Descriptor, data []byte) error {
	if desc.Size >= 0 && int64(len(data)) != desc.Size {
		return fmt.Errorf("%s: got %d bytes, want %d", desc.Digest, len(data), desc.Size)
	}
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("bad digest %q: %w", desc.Digest, err)
	}
	v := desc.Digest.Verifier()
	_, _ = io.Copy(v, bytes.NewReader(data))
	if !v.Verified() {
		return fmt.Errorf("%s: content has digest %s", desc.Digest, digest.FromBytes(data))
	}
	return nil
}

// Op names the registry operation an Error comes from.
type Op string

// The operations.
const (
	OpResolve Op = "resolve"
	OpFetch   Op = "fetch"
)

// Error is a registry failure.
type Error struct {
	// Op is the operation.
	Op Op
	// Ref is the reference it was about.
	Ref string
	// Kind is its class (failure.HTTPStatus of Status when there was a
	// response).
	Kind failure.Kind
	// Status is the HTTP status, 0 when there was no response.
	Status int
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying may help.
func (e *Error) Temporary() bool { return e.Kind.Temporary() }

// Is makes the error match the class of its kind (failure.ErrNotFound,
// failure.ErrUnauthorized, failure.ErrInvalid, failure.ErrUnavailable,
// failure.ErrUnreachable), so a service that gets one needs no mapping of
// its own: the registry classifies its errors where it knows what they
// mean.
func (e *Error) Is(target error) bool { return e.Kind.Is(target) }

var _ error = (*Error)(nil)

// wrap classifies an error from containerd's resolver or fetcher.
func wrap(op Op, ref string, err error) error {
	e := &Error{Op: op, Ref: ref, Err: err, Kind: failure.KindUnavailable}
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case errors.As(err, &status):
		e.Status = status.StatusCode
		e.Kind = failure.HTTPStatus(status.StatusCode)
	case errors.Is(err, docker.ErrInvalidAuthorization):
		e.Kind = failure.KindUnauthorized
		e.Status = http.StatusUnauthorized
	case errdefs.IsNotFound(err):
		e.Kind = failure.KindNotFound
		e.Status = http.StatusNotFound
		if strings.Contains(err.Error(), "rejecting") { // containerd's own manifest size cap
			e.Kind = failure.KindInvalid
		}
	case errdefs.IsNotImplemented(err):
		e.Kind = failure.KindInvalid
	case errdefs.IsInvalidArgument(err): // a negative descriptor size, say
		e.Kind = failure.KindInvalid
	case errdefs.IsFailedPrecondition(err): // more bytes than the descriptor's size
		e.Kind = failure.KindInvalid
	case failure.IsUnreachable(err):
		e.Kind = failure.KindUnreachable
	}
	return e
}
