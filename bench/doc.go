// Package bench holds Stevedore's benchmarks; see warm_test.go. It has no
// non-test code: `make bench` runs `go test -bench` here.
package bench
