package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names the file a command writes its CPU profile to, from
// its start to its return (for `stevedore up`, its stop): how the fleet's
// own CPU is looked into (docs/dev/profiling.md).
const cpuProfileEnv = "STEVEDORE_CPUPROFILE"

// startCPUProfile starts the CPU profile $STEVEDORE_CPUPROFILE asks for;
// the function it returns stops it and closes the file. With the variable
// unset it does nothing.
func startCPUProfile() (func() error, error) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path) //nolint:gosec // G304: the file the user who runs the command names
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: %w", cpuProfileEnv, err)
		}
		return nil
	}, nil
}
