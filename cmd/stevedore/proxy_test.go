package main

import (
	"context"
	"io"
	"net"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"
)

// proxyKey holds a script's regProxy in its Values.
type proxyKey struct{}

// regProxy forwards TCP connections to a registry until stopped; then its
// port refuses connections, as a registry that is down does.
type regProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(ctx context.Context, target string) (*regProxy, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &regProxy{l: l, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(ctx, c)
			}()
		}
	}()
	return p, nil
}

func (p *regProxy) forward(ctx context.Context, c net.Conn) {
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, up)
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}

// stop closes the listener and every connection, and waits for the
// forwarding goroutines.
func (p *regProxy) stop() {
	_ = p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// regproxyCmd is "regproxy stop": the script's $PROXYREG (a proxy to
// $REGISTRY) stops, and its port refuses connections from then on.
func regproxyCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 || args[0] != "stop" {
		ts.Fatalf("usage: regproxy stop")
	}
	p, ok := ts.Value(proxyKey{}).(*regProxy)
	if !ok {
		ts.Fatalf("regproxy: no proxy")
	}
	p.stop()
}
