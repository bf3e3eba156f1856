package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/broker"
)

// credentialsFile is the file of `stevedore up`'s NATS credentials in its
// data dir: a nats:// URL with user and password, mode 0600 in a 0700 dir.
const credentialsFile = "nats-credentials"

// endpointsDir holds, under the default data dir, one credentials file per
// running `stevedore up` named by its listen address, so that a client
// given only nats://host:port (or nothing, for watch) finds them whatever
// --data-dir up was given.
const endpointsDir = "endpoints"

// upCredentials makes a fresh password for `stevedore up` listening on
// host:port with data in dataDir, writes them (dataDir/nats-credentials,
// and the endpoint file of host:port under the default data dir), and
// returns the password and a function that removes the endpoint file.
func upCredentials(dataDir, host string, port int) (string, func(), error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	password := hex.EncodeToString(b[:])
	u := neturl.URL{Scheme: "nats", User: neturl.UserPassword(broker.DefaultUser, password), Host: net.JoinHostPort(host, fmt.Sprint(port))}
	if err := privateDir(dataDir); err != nil {
		return "", nil, err
	}
	if err := writePrivate(filepath.Join(dataDir, credentialsFile), u.String()+"\n"); err != nil {
		return "", nil, err
	}
	eps := filepath.Join(defaultDataDir(), endpointsDir)
	if err := privateDir(eps); err != nil {
		return "", nil, fmt.Errorf("credentials for clients: %w", err)
	}
	ep := filepath.Join(eps, endpointName(host, fmt.Sprint(port)))
	if err := writePrivate(ep, u.String()+"\n"); err != nil {
		return "", nil, fmt.Errorf("credentials for clients: %w", err)
	}
	return password, func() { _ = os.Remove(ep) }, nil
}

// privateDir makes dir (and its parents) and makes dir itself 0700: only
// its owner reads the credentials in it.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700) //nolint:gosec // G302: a directory needs its x bit; 0700 is owner-only
}

// writePrivate writes data to p, mode 0600, replacing it by rename.
func writePrivate(p, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".credentials-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.WriteString(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func endpointName(host, port string) string {
	return strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(host) + "_" + port
}

// localCredentials is the connect option of a client of nats URL raw
// that names no user: at every connection attempt it reads the
// credentials a `stevedore up` of this user wrote for raw's address (none
// when there are none, as for a fleet that wants none). A URL with a user,
// or several servers, gets no option.
func localCredentials(raw string) []nats.Option {
	return credentialsUnder(defaultDataDir(), raw)
}

// credentialsUnder is localCredentials with the endpoint files under
// dataDir rather than the default data dir.
func credentialsUnder(dataDir, raw string) []nats.Option {
	u, err := neturl.Parse(raw)
	if err != nil || u.User != nil || u.Host == "" || strings.Contains(raw, ",") {
		return nil
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil
	}
	p := filepath.Join(dataDir, endpointsDir, endpointName(host, port))
	return []nats.Option{nats.UserInfoHandler(func() (string, string) {
		data, err := os.ReadFile(p) //nolint:gosec // G304: this user's own data dir
		if err != nil {
			return "", ""
		}
		creds, err := neturl.Parse(strings.TrimSpace(string(data)))
		if err != nil || creds.User == nil {
			return "", ""
		}
		pw, _ := creds.User.Password()
		return creds.User.Username(), pw
	})}
}
