package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// defaultStore is the store name of an --oci-layout that names none.
const defaultStore = "layout"

// layoutFlags are --oci-layout: OCI layouts on this machine that the
// command serves to the fleet in a client session while it runs, as
// BuildKit's client serves its OCI stores over its session.
type layoutFlags struct {
	specs []string
}

func (f *layoutFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.specs, "oci-layout", nil,
		`serve the OCI layout DIR to the fleet while the command runs, as store STORE (default "layout"): [STORE=]DIR[@DIGEST]; `+
			`with @DIGEST, REF may be left out and is oci-layout://localhost/STORE@DIGEST (repeatable)`)
}

// layoutSpec is one --oci-layout.
type layoutSpec struct {
	store string
	dir   string
	// digest is the image to use when no REF is given; empty when none.
	digest digest.Digest
}

// parseLayoutSpec reads [STORE=]DIR[@DIGEST]. A STORE has no path
// separator, and @DIGEST counts only when it parses as a digest, so a DIR
// may hold '=' and '@'.
func parseLayoutSpec(s string) (layoutSpec, error) {
	spec := layoutSpec{store: defaultStore, dir: s}
	if store, dir, ok := strings.Cut(s, "="); ok && store != "" && !strings.ContainsAny(store, `/\`) {
		spec.store, spec.dir = store, dir
	}
	if i := strings.LastIndex(spec.dir, "@"); i >= 0 {
		if d, err := digest.Parse(spec.dir[i+1:]); err == nil {
			spec.dir, spec.digest = spec.dir[:i], d
		}
	}
	if spec.dir == "" {
		return spec, fmt.Errorf("--oci-layout %q: want [STORE=]DIR[@DIGEST]", s)
	}
	return spec, nil
}

// parse reads every --oci-layout; store names must differ.
func (f *layoutFlags) parse() ([]layoutSpec, error) {
	var specs []layoutSpec
	seen := map[string]bool{}
	for _, s := range f.specs {
		spec, err := parseLayoutSpec(s)
		if err != nil {
			return nil, err
		}
		if seen[spec.store] {
			return nil, fmt.Errorf("--oci-layout: two layouts are store %q; name them STORE=DIR", spec.store)
		}
		seen[spec.store] = true
		specs = append(specs, spec)
	}
	return specs, nil
}

// ref is the command's REF: the argument, or, without one, the image of
// the one --oci-layout DIR@DIGEST.
func ref(args []string, specs []layoutSpec) (string, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	var with []layoutSpec
	for _, s := range specs {
		if s.digest != "" {
			with = append(with, s)
		}
	}
	if len(with) != 1 {
		return "", errors.New("want REF, or one --oci-layout DIR@DIGEST")
	}
	return source.SchemeOCILayout + "://localhost/" + with[0].store + "@" + with[0].digest.String(), nil
}

// clientSession is the session a command serves its layouts, its local
// directory and its secrets in: the build's session.
type clientSession struct {
	srv    *session.Server
	specs  []layoutSpec
	stores map[string]*ocilayout.Layout
	// localDir is the local directory served; empty for none.
	localDir string
	// secrets are the names of the secrets served.
	secrets []string
}

// serveSession serves specs' layouts, localDir (a pull of a local path)
// and secrets on nc in a session, the build's, and points op at it when
// op reads client content: for oci-layout and oci-layout+blob,
// oci.session becomes the session (a new one unless op names it) and,
// when op names no store and one layout is served, oci.store becomes that
// layout's; for local, local.session becomes the session and
// local.sharedkeyhint this host and directory, unless op names them. It
// returns nil when there is nothing to serve; stop ends the session. The
// session serves build buildID only: a build another client starts naming
// it reads nothing.
func serveSession(ctx context.Context, nc *nats.Conn, buildID string, specs []layoutSpec, localDir string, secrets secret.Map, op *events.SourceOp) (*clientSession, error) {
	if len(specs) == 0 && localDir == "" && len(secrets) == 0 {
		return nil, nil
	}
	s := &clientSession{specs: specs, stores: map[string]*ocilayout.Layout{}, localDir: localDir, secrets: secretNames(secrets)}
	for _, spec := range specs {
		l, err := ocilayout.Open(spec.dir)
		if err != nil {
			return nil, fmt.Errorf("--oci-layout: %w", err)
		}
		s.stores[spec.store] = l
	}
	if op.Attrs == nil {
		op.Attrs = map[string]string{}
	}
	id := op.Attrs[source.AttrOCILayoutSessionID]
	if localDir != "" {
		id = op.Attrs[source.AttrLocalSessionID]
	}
	// A session of our own is keyed: the fleet accepts its answers only
	// (session.Key), and requests naming it only when its key signed them
	// (session.SignRequest). An id the user chose is served unsigned, and
	// a request naming it cannot be signed: the submit fails.
	var key session.Key
	if id == "" {
		var err error
		if key, err = session.NewKey(); err != nil {
			return nil, err
		}
		id = key.ID
	}
	var dirs map[string]string
	scheme, name, _ := strings.Cut(op.Identifier, "://")
	switch scheme {
	case source.SchemeOCILayout, source.SchemeOCILayoutBlob:
		op.Attrs[source.AttrOCILayoutSessionID] = id
		if _, ok := op.Attrs[source.AttrOCILayoutStoreID]; !ok && len(specs) == 1 {
			op.Attrs[source.AttrOCILayoutStoreID] = specs[0].store
		}
	case source.SchemeLocal:
		if localDir != "" {
			dirs = map[string]string{name: localDir}
			op.Attrs[source.AttrLocalSessionID] = id
			if _, ok := op.Attrs[source.AttrSharedKeyHint]; !ok {
				host, _ := os.Hostname()
				op.Attrs[source.AttrSharedKeyHint] = host + ":" + localDir
			}
		}
	}
	if len(op.Attrs) == 0 {
		op.Attrs = nil
	}
	var held secret.Store
	if len(secrets) > 0 {
		held = secrets
	}
	protocols, err := sessionProtocols(s.stores, dirs, held)
	if err != nil {
		return nil, err
	}
	srv, err := session.Serve(ctx, nc, id, session.Config{Protocols: protocols, Key: key, Builds: []string{buildID}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	s.srv = srv
	return s, nil
}

// servePresence serves an empty keyed session for build buildID: the
// build's session when the command serves nothing else, which the fleet
// asks whether the client is still there.
func servePresence(ctx context.Context, nc *nats.Conn, buildID string) (*session.Server, error) {
	key, err := session.NewKey()
	if err != nil {
		return nil, err
	}
	protocols, err := sessionProtocols(nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return session.Serve(ctx, nc, key.ID, session.Config{Key: key, Protocols: protocols, Builds: []string{buildID}, Logger: slog.New(slog.DiscardHandler)})
}

// sessionProtocols are what a session of the command serves: the OCI
// layouts stores, the local directories dirs and the secrets of held,
// each nil for none (a request for one is then not found, in BuildKit's
// words for a secret).
func sessionProtocols(stores map[string]*ocilayout.Layout, dirs map[string]string, held secret.Store) ([]session.Protocol, error) {
	l, err := store.NewServer(stores)
	if err != nil {
		return nil, err
	}
	d, err := dirsync.NewServer(dirs)
	if err != nil {
		return nil, err
	}
	s, err := secret.NewServer(held)
	if err != nil {
		return nil, err
	}
	return []session.Protocol{l, d, s}, nil
}

// id is the session's id, the build's Session; empty for no session.
func (s *clientSession) id() string {
	if s == nil {
		return ""
	}
	return s.srv.ID()
}

// stop ends the session; readers then fail with "no active session".
func (s *clientSession) stop() {
	if s != nil {
		_ = s.srv.Stop()
	}
}

// open reads a blob from the served layouts, for --output.
func (s *clientSession) open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	var errs []error
	for _, l := range s.stores {
		rc, err := l.OpenBlob(ctx, desc)
		if err == nil {
			return rc, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// print writes the session line of the command's output.
func (s *clientSession) print(w io.Writer) {
	if s == nil {
		return
	}
	stores := make([]string, 0, len(s.specs))
	for _, spec := range s.specs {
		dir, err := filepath.Abs(spec.dir)
		if err != nil {
			dir = spec.dir
		}
		stores = append(stores, spec.store+"="+dir)
	}
	sort.Strings(stores)
	if s.localDir != "" {
		stores = append(stores, "local "+s.localDir)
	}
	if len(s.secrets) > 0 {
		stores = append(stores, "secrets "+strings.Join(s.secrets, " "))
	}
	fmt.Fprintf(w, "session   %s (served until the command ended: %s)\n", s.srv.ID(), strings.Join(stores, ", "))
}
