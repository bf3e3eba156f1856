package failure

import (
	"crypto/tls"
	"errors"
	"strings"
	"syscall"
)

// IsUnreachable reports whether err says that nothing listens at the
// address it dialled (connection refused) or that what answered speaks
// another protocol: a plain http server to an https client, a server that
// is not TLS, an answer that is not http. Retrying the same address cannot
// help; a client that meets one fails at once (see ErrUnreachable).
func IsUnreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{
		"server gave HTTP response to HTTPS client",
		"malformed HTTP response",
		"first record does not look like a TLS handshake",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
