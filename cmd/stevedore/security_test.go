package main

import (
	"fmt"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestSecurityScripts runs the attacks of testdata/security against the
// CLI: `stevedore up` admits only the user who started it.
func TestSecurityScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/security",
		Setup: func(env *testscript.Env) error {
			port, err := freePort(t.Context())
			if err != nil {
				return err
			}
			env.Setenv("NATS_PORT", fmt.Sprint(port))
			env.Setenv("HOME", env.WorkDir)
			return nil
		},
	})
}
