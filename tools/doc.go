// Package tools pins the development tools Stevedore runs with `go tool`
// (golangci-lint), so their dependency graph stays out of every service's
// go.sum. It has no code of its own.
package tools
