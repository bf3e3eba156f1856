package registrytest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// FailRule makes matching requests fail. A request matches when every
// non-empty field among Method, Kind, Repo and Ref equals the request's.
type FailRule struct {
	// Method is the HTTP method to fail, such as "GET"; empty matches any.
	Method string
	// Kind is one of the Kind constants; empty matches any.
	Kind string
	// Repo is the repository name, such as "fixture/single"; empty matches
	// any.
	Repo string
	// Ref is the tag or digest (see Request.Ref); empty matches any.
	Ref string
	// Status is the HTTP status to answer with, such as 503. It must be
	// 400 or more.
	Status int
	// Times is how many matching requests fail before the rule is used up;
	// -1 means forever and zero means once.
	Times int
	// Body is the response body. Empty means a distribution-spec error
	// document, {"errors":[{"code":…,"message":…}]}, with a code that fits
	// Status (for example TOOMANYREQUESTS for 429), served as
	// application/json.
	Body string
}

// failState is a rule and how many times it may still fire (-1: forever).
type failState struct {
	rule FailRule
	left int
}

// Fail installs a fault rule. Rules are tried in the order they were
// installed; the first one that matches and is not used up fires. Requests
// that fail are recorded with the injected status. Fail panics if Status is
// below 400 or Times is below -1.
func (r *Registry) Fail(rule FailRule) {
	if rule.Status < 400 || rule.Status > 599 {
		panic(fmt.Sprintf("registrytest: Fail: status %d is not an error status", rule.Status))
	}
	left := rule.Times
	switch {
	case left == 0:
		left = 1
	case left < -1:
		panic(fmt.Sprintf("registrytest: Fail: Times %d", rule.Times))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules = append(r.rules, &failState{rule: rule, left: left})
}

// takeFault returns the first live rule matching req and uses up one of its
// times.
func (r *Registry) takeFault(req Request) (FailRule, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.rules {
		if s.left == 0 {
			continue
		}
		fr := s.rule
		if (fr.Method != "" && fr.Method != req.Method) || (fr.Kind != "" && fr.Kind != req.Kind) ||
			(fr.Repo != "" && fr.Repo != req.Repo) || (fr.Ref != "" && fr.Ref != req.Ref) {
			continue
		}
		if s.left > 0 {
			s.left--
		}
		return fr, true
	}
	return FailRule{}, false
}

// errorCodes maps statuses to the distribution-spec error code a registry
// would most likely send with them.
var errorCodes = map[int]string{
	http.StatusBadRequest:      "UNSUPPORTED",
	http.StatusUnauthorized:    "UNAUTHORIZED",
	http.StatusForbidden:       "DENIED",
	http.StatusNotFound:        "NAME_UNKNOWN",
	http.StatusTooManyRequests: "TOOMANYREQUESTS",
}

// writeError answers with status and body, or with a distribution-spec
// error document when body is empty.
func writeError(w http.ResponseWriter, req *http.Request, status int, body string) {
	if body == "" {
		code, ok := errorCodes[status]
		if !ok {
			code = "UNKNOWN"
		}
		type detail struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		dt, err := json.Marshal(struct {
			Errors []detail `json:"errors"`
		}{[]detail{{Code: code, Message: fmt.Sprintf("registrytest: %d %s for %s %s", status, http.StatusText(status), req.Method, req.URL.Path)}}})
		if err != nil {
			panic(err) // strings always marshal
		}
		body = string(dt)
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}
