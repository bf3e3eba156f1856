# A stand-in for the upstream registry:3 image, for machines that cannot
# pull it: distribution's registry (github.com/distribution/distribution/v3
# cmd/registry, the version the Makefile names), built on the host
# (CGO_ENABLED=0) by `make stand-ins`, FROM scratch, with a wget at the
# path busybox has it for the healthcheck in deploy/compose.yaml. Like the
# upstream image it serves /etc/distribution/config.yml.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY registry /bin/registry
COPY wget /usr/bin/wget
ENV PATH=/bin:/usr/bin
ENV OTEL_TRACES_EXPORTER=none
LABEL dev.stevedore.stand-in="registry"
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/bin/registry"]
CMD ["serve", "/etc/distribution/config.yml"]
