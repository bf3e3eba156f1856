# stevedore/buildkitd: a build node's buildkitd for deploy/compose.builder.yaml,
# FROM scratch like the service images:
#
#   make builder-image      # stevedore/buildkitd:TAG (default dev)
#
# The context `make builder-image` prepares holds buildkitd and buildctl (static,
# built by `make builders` from BuildKit at the version tools/buildkit pins),
# the host's runc with the shared libraries it needs (ldd), and the host's CA
# certificates. Nothing is pulled and nothing runs at build time.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin:/usr/sbin
VOLUME ["/var/lib/buildkit"]
ENTRYPOINT ["/usr/bin/buildkitd"]
