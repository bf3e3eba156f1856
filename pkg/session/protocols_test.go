package session_test

import (
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// dirProtocol serves dirs, for a session.Config's Protocols.
func dirProtocol(t testing.TB, dirs map[string]string) session.Protocol {
	t.Helper()
	p, err := dirsync.NewServer(dirs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// storeProtocol serves the OCI layouts stores, for a session.Config's
// Protocols.
func storeProtocol(t testing.TB, stores map[string]*ocilayout.Layout) session.Protocol {
	t.Helper()
	p, err := store.NewServer(stores)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// secretProtocol serves the secrets of store, for a session.Config's
// Protocols.
func secretProtocol(t testing.TB, store secret.Store) session.Protocol {
	t.Helper()
	p, err := secret.NewServer(store)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// outputProtocol lets the fleet write into outputs, for a session.Config's
// Protocols.
func outputProtocol(t testing.TB, outputs map[string]*ocilayout.Layout) session.Protocol {
	t.Helper()
	p, err := output.NewServer(outputs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
