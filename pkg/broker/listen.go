package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// ErrAddrInUse is returned by Start when an address the server would
// listen on is taken by another process.
var ErrAddrInUse = errors.New("address already in use")

// checkAddrs tries each address the server is configured to listen on, so
// that Start says at once which one is taken instead of waiting out
// ReadyTimeout for a server that cannot listen.
func checkAddrs(ctx context.Context, cfg Config) error {
	type addr struct {
		what string
		port int
	}
	var addrs []addr
	if !cfg.NoListen {
		addrs = append(addrs, addr{"client", cfg.Port})
	}
	if cfg.HTTPPort != 0 {
		addrs = append(addrs, addr{"monitoring", cfg.HTTPPort})
	}
	if cfg.ClusterName != "" {
		addrs = append(addrs, addr{"cluster", cfg.ClusterPort})
	}
	for _, a := range addrs {
		if a.port == RandomPort || a.port <= 0 {
			continue
		}
		hostPort := net.JoinHostPort(cfg.Host, strconv.Itoa(a.port))
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", hostPort)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("broker: %s address %s: %w (another process listens there; pick another port)", a.what, hostPort, ErrAddrInUse)
			}
			return fmt.Errorf("broker: %s address %s: %w", a.what, hostPort, err)
		}
		if err := l.Close(); err != nil {
			return fmt.Errorf("broker: %s address %s: %w", a.what, hostPort, err)
		}
	}
	return nil
}
