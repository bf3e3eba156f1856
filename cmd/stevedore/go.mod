module github.com/stevedore-dev/stevedore/cmd/stevedore

go 1.26.8

require github.com/stevedore-dev/stevedore/pkg v0.0.0

replace github.com/stevedore-dev/stevedore/pkg => ../../pkg
