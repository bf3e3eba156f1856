package registrytest

import "sync"

// Gate holds the first request that matches it until Release: a way to
// catch a client in the middle of a request (to kill it there, say).
type Gate struct {
	method, kind string
	arrived      chan struct{}
	release      chan struct{}
	once         sync.Once
	taken        bool
}

// Gate installs a gate for the first request with this method and kind
// ("" matches any). Later requests pass through.
func (r *Registry) Gate(method, kind string) *Gate {
	g := &Gate{method: method, kind: kind, arrived: make(chan struct{}), release: make(chan struct{})}
	r.mu.Lock()
	r.gates = append(r.gates, g)
	r.mu.Unlock()
	return g
}

// Arrived is closed when the held request has arrived.
func (g *Gate) Arrived() <-chan struct{} { return g.arrived }

// Release lets the held request (and any later one) through.
func (g *Gate) Release() { g.once.Do(func() { close(g.release) }) }

// takeGate returns the gate that holds req, if any, marking it taken.
func (r *Registry) takeGate(req Request) *Gate {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.gates {
		if !g.taken && (g.method == "" || g.method == req.Method) && (g.kind == "" || g.kind == req.Kind) {
			g.taken = true
			return g
		}
	}
	return nil
}
