package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/session/secret"
)

// secretFlags are --secret: secrets the command serves to the fleet in its
// session while it runs, in buildctl's syntax, which git and http sources
// read their credentials from (GIT_AUTH_TOKEN, GIT_AUTH_HEADER,
// HTTP_AUTH_TOKEN_<host>, HTTP_AUTH_HEADER_<host>, or the names
// git.authtokensecret, git.authheadersecret and http.authheadersecret
// give).
type secretFlags struct {
	specs []string
}

func (f *secretFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.specs, "secret", nil,
		`serve a secret to the fleet while the command runs, as buildctl's --secret: id=NAME[,src=FILE|,env=VAR][,type=file|env] `+
			`(without src and env: the variable NAME when it is set, else the file NAME) (repeatable)`)
}

// secretSource is one --secret: where the value of secret id comes from.
type secretSource struct {
	id, file, env string
}

// parseSecretSpec reads one --secret the way buildctl does: CSV fields
// type=file|env, id=, src= (or source=), env=; with type=env, src names
// the variable.
func parseSecretSpec(spec string) (secretSource, error) {
	r := csv.NewReader(strings.NewReader(spec))
	fields, err := r.Read()
	if err != nil {
		return secretSource{}, fmt.Errorf("failed to parse csv secret: %w", err)
	}
	var s secretSource
	typ := ""
	for _, field := range fields {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return secretSource{}, fmt.Errorf("invalid field '%s' must be a key=value pair", field)
		}
		switch strings.ToLower(key) {
		case "type":
			if value != "file" && value != "env" {
				return secretSource{}, fmt.Errorf("unsupported secret type %q", value)
			}
			typ = value
		case "id":
			s.id = value
		case "source", "src":
			s.file = value
		case "env":
			s.env = value
		default:
			return secretSource{}, fmt.Errorf("unexpected key '%s' in '%s'", key, field)
		}
	}
	if typ == "env" && s.env == "" {
		s.env, s.file = s.file, ""
	}
	if s.id == "" {
		return secretSource{}, errors.New("secret missing ID")
	}
	return s, nil
}

// value reads the secret, as BuildKit's secretsprovider does: from its
// variable, or its file; with neither named, the variable named like the
// secret when it is set, else the file.
func (s secretSource) value() ([]byte, error) {
	if s.env == "" && s.file == "" {
		if _, ok := os.LookupEnv(s.id); ok {
			s.env = s.id
		} else {
			s.file = s.id
		}
	}
	if s.env != "" {
		return []byte(os.Getenv(s.env)), nil
	}
	fi, err := os.Stat(s.file)
	if err != nil {
		return nil, fmt.Errorf("failed to stat %s: %w", s.file, err)
	}
	if fi.Size() > secret.MaxSize {
		return nil, fmt.Errorf("secret %s too big. max size %d bytes", s.id, secret.MaxSize)
	}
	return os.ReadFile(s.file)
}

// parse reads every --secret into the secrets a session serves. A later
// --secret with the same id replaces an earlier one, as in buildctl.
func (f *secretFlags) parse() (secret.Map, error) {
	if len(f.specs) == 0 {
		return nil, nil
	}
	out := secret.Map{}
	for _, spec := range f.specs {
		s, err := parseSecretSpec(spec)
		if err != nil {
			return nil, fmt.Errorf("--secret %q: %w", spec, err)
		}
		v, err := s.value()
		if err != nil {
			return nil, fmt.Errorf("--secret %q: %w", spec, err)
		}
		out[s.id] = v
	}
	return out, nil
}

// secretNames are the names of secrets, sorted: what the command prints
// (never a value).
func secretNames(secrets secret.Map) []string {
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
