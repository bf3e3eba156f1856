// Command wget is the part of busybox's wget that container healthchecks
// use, for images built FROM scratch that have no shell and no busybox: the
// stand-ins for the upstream nats (-alpine) and registry images that
// `make stand-ins` builds, whose compose healthchecks run
// `wget -q --spider URL` exactly as they do in the upstream images.
//
// It GETs the URL and exits 0 on a 2xx answer and 1 otherwise, like
// busybox (whose --spider also sends a GET and reads no body, which matters
// for endpoints that answer HEAD with 405). Options: -q (quiet), -O FILE (write the body to
// FILE, "-" for stdout; the default discards it), --spider, -S (print the
// response headers), -T SECONDS or --timeout=SECONDS (default 10). Any
// other option is an error (exit 2), so a healthcheck that relies on one
// this does not implement fails loudly instead of passing.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// options are the parsed command line.
type options struct {
	quiet   bool
	spider  bool
	headers bool
	output  string
	timeout time.Duration
	url     string
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "wget:", err)
		fmt.Fprintln(stderr, "usage: wget [-q] [-S] [--spider] [-O FILE] [-T SECONDS] URL")
		return 2
	}
	if err := fetch(opts, stdout, stderr); err != nil {
		if !opts.quiet {
			fmt.Fprintln(stderr, "wget:", err)
		}
		return 1
	}
	return 0
}

func parse(args []string) (options, error) {
	opts := options{timeout: 10 * time.Second}
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("option %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "-q":
			opts.quiet = true
		case a == "--spider":
			opts.spider = true
		case a == "-S":
			opts.headers = true
		case a == "-O":
			v, err := value()
			if err != nil {
				return opts, err
			}
			opts.output = v
		case a == "-T" || strings.HasPrefix(a, "--timeout="):
			v, ok := strings.CutPrefix(a, "--timeout=")
			if !ok {
				var err error
				if v, err = value(); err != nil {
					return opts, err
				}
			}
			secs, err := strconv.Atoi(v)
			if err != nil || secs <= 0 {
				return opts, fmt.Errorf("bad timeout %q", v)
			}
			opts.timeout = time.Duration(secs) * time.Second
		case strings.HasPrefix(a, "-") && a != "-":
			return opts, fmt.Errorf("unsupported option %s", a)
		default:
			if opts.url != "" {
				return opts, errors.New("only one URL is supported")
			}
			opts.url = a
		}
	}
	if opts.url == "" {
		return opts, errors.New("no URL")
	}
	if !strings.HasPrefix(opts.url, "http://") && !strings.HasPrefix(opts.url, "https://") {
		opts.url = "http://" + opts.url
	}
	return opts, nil
}

func fetch(opts options, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), opts.timeout, fmt.Errorf("no answer within %s", opts.timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, opts.url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if opts.headers {
		fmt.Fprintf(stderr, "  %s %s\n", resp.Proto, resp.Status)
		for k, vs := range resp.Header {
			for _, v := range vs {
				fmt.Fprintf(stderr, "  %s: %s\n", k, v)
			}
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("server returned error: %s", resp.Status)
	}
	if opts.spider {
		return nil
	}
	w := io.Discard
	switch opts.output {
	case "":
	case "-":
		w = stdout
	default:
		f, err := os.Create(opts.output)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		w = f
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
