package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// OpPush is the operation of PushBlob, PushManifest and MountFrom.
const OpPush Op = "push"

// AnnotationDistributionSource is the prefix of the descriptor annotation
// that tells PushBlob which repositories of the target registry already
// hold a blob, so the registry can mount it from one of them instead of
// receiving it again. The key is this prefix, a dot and the registry's host
// name without its port, such as
// "containerd.io/distribution.source.registry.example.com"; the value is a
// comma-separated list of repositories of that registry, such as
// "cache/app,cache/base". It is containerd's content label of the same
// name, which BuildKit copies onto the descriptors it exports; containerd's
// pusher reads it, and MountFrom sets it. Because the port is not part of
// the key, it names repositories of every registry on that host.
const AnnotationDistributionSource = labels.LabelDistributionSource

// maxAttempts is how many times containerd sends one request at most
// (retrying after a 401, a 408, a 429 or a 5xx); HasBlob's HEAD does the
// same.
const maxAttempts = 5

// maxResets bounds how many times an upload starts over because
// containerd reset the writer, which it does each time it retries the
// upload request with a new body.
const maxResets = maxAttempts - 1

// errUploadStalled is the cause of an upload the registry stopped reading.
var errUploadStalled = errors.New("the registry stopped accepting data")

// errPushDone is the cause with which a finished push releases its request.
var errPushDone = errors.New("push done")

// PushResult says what a successful PushBlob did to get the blob into the
// repository. Exactly one field is true after a successful push; all are
// false after a failed one.
type PushResult struct {
	// Existed is true when the repository already had the blob (a HEAD of
	// it answered 200): nothing was sent and open was not called.
	Existed bool
	// Mounted is true when the registry mounted the blob from another of
	// its repositories, one the descriptor's AnnotationDistributionSource
	// annotation names (the mount POST answered 201 Created): no content
	// was sent and open was not called.
	Mounted bool
	// Uploaded is true when the content open returned was uploaded, after
	// its size and digest were checked against the descriptor, and the
	// registry committed it.
	Uploaded bool
}

// PushBlob makes repository ref ("host/repo", a tag or digest is ignored)
// hold the blob desc describes, with containerd's pusher: it asks whether
// the repository has the blob (HEAD), and if not, mounts it from a
// repository the descriptor's AnnotationDistributionSource annotation names
// (see MountFrom), and if that is not possible, calls open and uploads what
// it returns (POST, then one PUT). The content must have exactly desc's
// size and digest; it is checked as it is sent, and the last bytes of
// content that does not match are never sent, so the registry is left
// without the blob. open may be called again if the registry makes the
// upload start over (containerd retries a request after a 401 or a 5xx);
// each call must return the content from its start. The PushResult says
// whether the blob existed, was mounted or was uploaded.
//
// Errors are *Error with Op OpPush: failure.KindInvalid for a reference containerd
// cannot parse, a descriptor with a bad digest, a negative size or a
// manifest or index media type (push those with PushManifest), and content
// that does not match desc; failure.KindUnauthorized when the registry refuses the
// credentials (401, 403) or there are none; failure.KindNotFound for a 404;
// failure.KindUnavailable for a 5xx or 429, a network error, a timeout, or a
// registry that stops accepting data for Config.Timeout; failure.KindInvalid for
// other 4xx. An error from open, or from reading what it returns, is
// wrapped (errors.Is and errors.As find it) with that error's Kind when it
// is an *Error itself, such as one from Open on a source registry, and
// failure.KindInvalid otherwise.
func (c *Client) PushBlob(ctx context.Context, ref string, desc ocispec.Descriptor, open func(ctx context.Context) (io.ReadCloser, error)) (PushResult, error) {
	if err := checkRef(OpPush, ref); err != nil {
		return PushResult{}, err
	}
	if err := checkPushDescriptor(desc); err != nil {
		return PushResult{}, &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid, Err: err}
	}
	if isManifestType(desc.MediaType) {
		return PushResult{}, &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid,
			Err: fmt.Errorf("%s has manifest media type %s: push it with PushManifest", desc.Digest, desc.MediaType)}
	}
	if open == nil {
		return PushResult{}, &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("no content source for %s", desc.Digest)}
	}
	return c.push(ctx, ref, desc, open)
}

// PushManifest stores data, a manifest or index with desc's media type,
// size and digest, in the repository of ref under ref's tag
// ("host/repo:tag", or "host/repo:tag@digest" with desc's digest). data is
// verified against desc first, and sent byte for byte, so the registry
// serves desc.Digest for the tag. When the tag already points at desc's
// digest (its HEAD says so), nothing is sent. The blobs and child manifests
// data references must be in the repository already; most registries
// reject it otherwise.
//
// Errors are *Error with Op OpPush: failure.KindInvalid for a reference with no tag
// or a digest other than desc's, a media type that is not a manifest or
// index, data larger than Config.MaxManifestBytes or not matching desc, and
// a manifest the registry rejects with a 4xx other than 401, 403 and 404
// (such as 400 MANIFEST_INVALID); failure.KindNotFound for a 404, which some
// registries (go-containerregistry's among them) send for an index naming
// a manifest the repository lacks; failure.KindUnauthorized and failure.KindUnavailable as
// for PushBlob.
func (c *Client) PushManifest(ctx context.Context, ref string, desc ocispec.Descriptor, data []byte) error {
	if err := checkRef(OpPush, ref); err != nil {
		return err
	}
	invalid := func(format string, args ...any) error {
		return &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf(format, args...)}
	}
	spec, err := reference.Parse(ref)
	if err != nil { // checkRef parsed it already
		return invalid("bad reference %q: %w", ref, err)
	}
	if tag, _, _ := strings.Cut(spec.Object, "@"); tag == "" {
		return invalid("%q names no tag to push the manifest to", ref)
	}
	if d := spec.Digest(); d != "" && d != desc.Digest {
		return invalid("%q names digest %s, the manifest is %s", ref, d, desc.Digest)
	}
	if !isManifestType(desc.MediaType) {
		return invalid("%s: media type %q is not a manifest or index", desc.Digest, desc.MediaType)
	}
	if int64(len(data)) > c.cfg.MaxManifestBytes {
		return invalid("%s is %d bytes, more than the %d-byte cap", desc.Digest, len(data), c.cfg.MaxManifestBytes)
	}
	if err := Verify(desc, data); err != nil {
		return &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid, Err: err}
	}
	_, err = c.push(ctx, ref, desc, func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	return err
}

// HasBlob reports whether repository ref ("host/repo", a tag or digest is
// ignored) holds the blob desc names, with one HEAD of
// /v2/<repo>/blobs/<digest> (repeated after an auth challenge, and for a
// 408, 429 or 5xx as containerd does). A 200 is true and a 404 is false.
//
// Errors are *Error with Op OpResolve: failure.KindInvalid for a bad reference or
// digest and for other 4xx; failure.KindUnauthorized for a 401 or 403, or missing
// credentials; failure.KindUnavailable for a 5xx or 429, a network error or a
// timeout.
func (c *Client) HasBlob(ctx context.Context, ref string, desc ocispec.Descriptor) (bool, error) {
	if err := checkRef(OpResolve, ref); err != nil {
		return false, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return false, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad digest %q: %w", desc.Digest, err)}
	}
	spec, err := reference.Parse(ref)
	if err != nil {
		return false, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad reference %q: %w", ref, err)}
	}
	hosts, err := c.hosts(spec.Hostname())
	if err != nil {
		return false, wrap(OpResolve, ref, err)
	}
	i := slices.IndexFunc(hosts, func(h docker.RegistryHost) bool { return h.Capabilities.Has(docker.HostCapabilityPull) })
	if i < 0 {
		return false, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("no pull host for %s", spec.Hostname())}
	}
	host := hosts[i]
	ctx, err = docker.ContextWithRepositoryScope(ctx, spec, false)
	if err != nil {
		return false, &Error{Op: OpResolve, Ref: ref, Kind: failure.KindInvalid, Err: err}
	}
	repo := strings.TrimPrefix(spec.Locator, spec.Hostname()+"/")
	u := host.Scheme + "://" + host.Host + host.Path + "/" + repo + "/blobs/" + desc.Digest.String()
	status, err := headWithAuth(ctx, host, u)
	if err != nil {
		return false, wrap(OpResolve, ref, err)
	}
	return status == http.StatusOK, nil
}

// headWithAuth sends a HEAD to u the way containerd sends its requests:
// authorized by host's authorizer, again after a 401 whose challenge the
// authorizer can answer, and again after a 408 or 429, or a 500, 503 or 504
// that is not the same as the previous status, at most five times. It
// returns the final status when it is 200 or 404, and an error otherwise
// (remoteerrors.ErrUnexpectedStatus for any other status). (containerd's
// resolver asks
// /manifests/ before /blobs/ for a digest, and its pusher starts an upload
// when the blob is missing, so a plain blob HEAD needs its own request.)
func headWithAuth(ctx context.Context, host docker.RegistryHost, u string) (int, error) {
	client := host.Client
	if client == nil {
		client = http.DefaultClient
	}
	var responses []*http.Response
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return 0, err
		}
		for k, v := range host.Header {
			req.Header[k] = slices.Clone(v)
		}
		if host.Authorizer != nil {
			if err := host.Authorizer.Authorize(ctx, req); err != nil {
				return 0, fmt.Errorf("failed to authorize: %w", err)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("failed to do request: %w", err)
		}
		_ = resp.Body.Close() // a HEAD has none
		// The authorizer reads the headers of every response so far.
		responses = append(responses, resp) //nolint:bodyclose // closed just above; bodyclose loses track of it in the slice
		retry, err := retryHead(ctx, host, responses)
		if err != nil {
			return 0, err
		}
		if retry && attempt < maxAttempts {
			continue
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusNotFound:
			return resp.StatusCode, nil
		}
		return 0, remoteerrors.NewUnexpectedStatusErr(resp)
	}
}

// retryHead reports whether headWithAuth sends its HEAD again after the
// last of responses, containerd's policy: after a 401 whose challenge the
// authorizer can answer (an error when it cannot, for lack of credentials
// say), a 408 or a 429, or a 500, 503 or 504 unlike the status before it.
func retryHead(ctx context.Context, host docker.RegistryHost, responses []*http.Response) (bool, error) {
	last := responses[len(responses)-1]
	switch last.StatusCode {
	case http.StatusUnauthorized:
		if host.Authorizer == nil {
			return false, nil
		}
		if err := host.Authorizer.AddResponses(ctx, responses); err != nil {
			if errdefs.IsNotImplemented(err) {
				return false, nil
			}
			return false, err
		}
		return true, nil
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true, nil
	case http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return len(responses) < 2 || responses[len(responses)-2].StatusCode != last.StatusCode, nil
	}
	return false, nil
}

// MountFrom returns a copy of desc whose AnnotationDistributionSource
// annotation names the repository of ref ("host/repo", a tag or digest is
// ignored) as one that holds the blob, besides any it named already; desc
// itself is not changed. PushBlob to another repository of the same
// registry then mounts the blob from there if that repository still has
// it, and uploads it otherwise.
//
// The error is an *Error with Op OpPush and failure.KindInvalid for a reference
// containerd cannot parse.
func MountFrom(desc ocispec.Descriptor, ref string) (ocispec.Descriptor, error) {
	if err := checkRef(OpPush, ref); err != nil {
		return ocispec.Descriptor{}, err
	}
	spec, err := reference.Parse(ref)
	if err == nil {
		var u *url.URL
		if u, err = url.Parse("dummy://" + spec.Locator); err == nil {
			key := AnnotationDistributionSource + "." + u.Hostname()
			repo := strings.TrimPrefix(u.Path, "/")
			var repos []string
			if v := desc.Annotations[key]; v != "" {
				repos = strings.Split(v, ",")
			}
			if !slices.Contains(repos, repo) {
				repos = append(repos, repo)
			}
			out := desc
			out.Annotations = make(map[string]string, len(desc.Annotations)+1)
			for k, v := range desc.Annotations {
				out.Annotations[k] = v
			}
			out.Annotations[key] = strings.Join(repos, ",")
			return out, nil
		}
	}
	return ocispec.Descriptor{}, &Error{Op: OpPush, Ref: ref, Kind: failure.KindInvalid, Err: fmt.Errorf("bad reference %q: %w", ref, err)}
}

// push runs containerd's pusher for desc against ref and, when the
// registry neither has the content nor mounts it, uploads what open
// returns.
//
// containerd answers a HEAD that finds the content, and a mount the
// registry performs (201 Created), alike, with errdefs.ErrAlreadyExists;
// which of the two happened is only in its status tracker (Exists, or
// MountedFrom). The tracker is also the resolver's memory of what it has
// pushed, keyed by digest alone, so a shared one would answer "already
// exists" for a blob pushed earlier to another repository, or a manifest
// pushed earlier under another tag, without asking the registry. So every
// push gets a resolver of its own, with a fresh tracker, over the Client's
// hosts and authorizer (which keeps the tokens).
func (c *Client) push(ctx context.Context, ref string, desc ocispec.Descriptor, open func(ctx context.Context) (io.ReadCloser, error)) (PushResult, error) {
	tracker := docker.NewInMemoryTracker()
	pusher, err := docker.NewResolver(docker.ResolverOptions{Hosts: c.hosts, Tracker: tracker}).Pusher(ctx, ref)
	if err != nil {
		return PushResult{}, wrap(OpPush, ref, err)
	}
	// Cancelling this context aborts the upload request: how a push stops
	// content that does not match, or a registry that stopped reading.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errPushDone)
	w, err := pusher.Push(ctx, desc)
	if errdefs.IsAlreadyExists(err) {
		st, serr := tracker.GetStatus(remotes.MakeRefKey(ctx, desc))
		if serr == nil && st.MountedFrom != "" {
			return PushResult{Mounted: true}, nil
		}
		return PushResult{Existed: true}, nil
	}
	if err != nil {
		return PushResult{}, wrap(OpPush, ref, err)
	}
	// Runs before cancel: by then a failed upload has cancelled its
	// request itself, so closing cannot complete a partial body.
	defer func() { _ = w.Close() }()
	if err := c.upload(ctx, cancel, w, desc, open); err != nil {
		var se *sourceError
		if errors.As(err, &se) {
			kind := failure.KindInvalid
			var inner *Error
			if errors.As(se.err, &inner) {
				kind = inner.Kind
			}
			return PushResult{}, &Error{Op: OpPush, Ref: ref, Kind: kind, Err: se.err}
		}
		return PushResult{}, wrap(OpPush, ref, err)
	}
	return PushResult{Uploaded: true}, nil
}

// upload copies what open returns into w and commits it, starting over
// (calling open again) when containerd resets the writer. Content that
// does not match desc, and any other failure of the source, cancels the
// request with cancel before upload returns, so the registry never gets a
// complete body.
func (c *Client) upload(ctx context.Context, cancel context.CancelCauseFunc, w content.Writer, desc ocispec.Descriptor, open func(ctx context.Context) (io.ReadCloser, error)) error {
	guard := newWriteGuard(w, cancel, c.cfg.Timeout)
	defer guard.timer.Stop()
	for resets := 0; ; resets++ {
		err := copyOnce(ctx, guard, w, desc, open)
		if errors.Is(err, content.ErrReset) && resets < maxResets {
			continue
		}
		var se *sourceError
		if errors.As(err, &se) {
			cancel(err)
		}
		return err
	}
}

// copyOnce sends the content open returns through guard and commits w.
func copyOnce(ctx context.Context, guard io.Writer, w content.Writer, desc ocispec.Descriptor, open func(ctx context.Context) (io.ReadCloser, error)) error {
	rc, err := open(ctx)
	if err != nil {
		return &sourceError{fmt.Errorf("open content of %s: %w", desc.Digest, err)}
	}
	_, err = io.Copy(guard, &verifier{r: rc, desc: desc, d: desc.Digest.Algorithm().Digester()})
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = &sourceError{fmt.Errorf("close content of %s: %w", desc.Digest, cerr)}
	}
	if err != nil {
		return err
	}
	return w.Commit(ctx, desc.Size, desc.Digest)
}

// sourceError marks a failure of the content being pushed (open, its
// reader, or content that does not match the descriptor), as opposed to
// one of the registry.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }

func (e *sourceError) Unwrap() error { return e.err }

// verifier reads the content of desc from r and checks it as it goes. It
// holds back the read that completes desc's size until it has checked the
// digest and that r has nothing more, and fails instead of returning that
// read when the content does not match: the registry never receives all
// the bytes of a wrong blob, so it cannot commit one.
type verifier struct {
	r    io.Reader
	desc ocispec.Descriptor
	d    digest.Digester
	n    int64
	done bool
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	if rem := v.desc.Size - v.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	var (
		n   int
		err error
	)
	if len(p) > 0 {
		n, err = v.r.Read(p)
		v.n += int64(n)
		_, _ = v.d.Hash().Write(p[:n])
	}
	eof := errors.Is(err, io.EOF)
	switch {
	case err != nil && !eof:
		return 0, &sourceError{fmt.Errorf("read content of %s: %w", v.desc.Digest, err)}
	case v.n < v.desc.Size && eof:
		return 0, &sourceError{fmt.Errorf("%s: got %d bytes, want %d", v.desc.Digest, v.n, v.desc.Size)}
	case v.n < v.desc.Size:
		return n, nil
	}
	if !eof {
		if err := v.checkEnd(); err != nil {
			return 0, err
		}
	}
	if got := v.d.Digest(); got != v.desc.Digest {
		return 0, &sourceError{fmt.Errorf("%s: content has digest %s", v.desc.Digest, got)}
	}
	v.done = true
	return n, nil
}

// checkEnd makes sure r has nothing after desc's size.
func (v *verifier) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := v.r.Read(one[:])
		switch {
		case n > 0:
			return &sourceError{fmt.Errorf("%s: more than the descriptor's %d bytes", v.desc.Digest, v.desc.Size)}
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return &sourceError{fmt.Errorf("read content of %s: %w", v.desc.Digest, err)}
		}
	}
	return &sourceError{fmt.Errorf("read content of %s: %w", v.desc.Digest, io.ErrNoProgress)}
}

// writeGuard cancels the upload whose Write blocks for longer than its
// timeout: a registry that stopped reading the body. Time spent reading
// the source between writes does not count.
type writeGuard struct {
	w       io.Writer
	timeout time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

func newWriteGuard(w io.Writer, cancel context.CancelCauseFunc, timeout time.Duration) *writeGuard {
	g := &writeGuard{w: w, timeout: timeout}
	g.timer = time.AfterFunc(timeout, func() {
		g.stalled.Store(true)
		cancel(errUploadStalled)
	})
	g.timer.Stop()
	return g
}

func (g *writeGuard) Write(p []byte) (int, error) {
	g.timer.Reset(g.timeout)
	n, err := g.w.Write(p)
	g.timer.Stop()
	if err != nil && g.stalled.Load() {
		err = fmt.Errorf("no data accepted for %s: %w", g.timeout, errors.Join(errUploadStalled, context.DeadlineExceeded))
	}
	return n, err
}

// checkPushDescriptor rejects a descriptor PushBlob cannot push.
func checkPushDescriptor(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("bad digest %q: %w", desc.Digest, err)
	}
	if desc.Size < 0 {
		return fmt.Errorf("%s: negative size %d", desc.Digest, desc.Size)
	}
	return nil
}

// isManifestType reports whether containerd's pusher treats mediaType as a
// manifest or index (a PUT to /manifests/ rather than a blob upload).
func isManifestType(mediaType string) bool {
	return images.IsManifestType(mediaType) || images.IsIndexType(mediaType)
}
