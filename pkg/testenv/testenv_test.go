package testenv_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// helperEnv makes the test binary, run again by TestLack, play a test
// that lacks something.
const helperEnv = "STEVEDORE_TESTENV_HELPER"

// TestLackHelper is the test TestLack runs in a child process; run any
// other way it does nothing.
func TestLackHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	testenv.Lack(t, "needs a %s", "unicorn")
	t.Error("Lack returned")
}

// Without CI a lack skips, with the reason; with CI set (to anything) it
// fails the test.
func TestLack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{"", false, "--- SKIP: TestLackHelper"},
		{"1", true, "--- FAIL: TestLackHelper"},
		{"true", true, "--- FAIL: TestLackHelper"},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run", "^TestLackHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(withoutCI(os.Environ()), helperEnv+"=1")
			if tc.ci != "" {
				cmd.Env = append(cmd.Env, testenv.EnvCI+"="+tc.ci)
			}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if failed := errors.As(err, &exit); failed != tc.wantFail || (err != nil && !failed) {
				t.Fatalf("CI=%q: exit %v, want failure %v\n%s", tc.ci, err, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "needs a unicorn") {
				t.Errorf("CI=%q: output lacks %q and the reason:\n%s", tc.ci, tc.want, out)
			}
			if strings.Contains(string(out), "Lack returned") {
				t.Errorf("CI=%q: the test went on after Lack:\n%s", tc.ci, out)
			}
		})
	}
}

func withoutCI(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, testenv.EnvCI+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Tool finds a tool every machine that builds Go has.
func TestTool(t *testing.T) {
	t.Parallel()
	p := testenv.Tool(t, "sh", "the test looks it up")
	if want, err := exec.LookPath("sh"); err != nil || p != want {
		t.Errorf("Tool(sh) = %q, want %q (%v)", p, want, err)
	}
}
