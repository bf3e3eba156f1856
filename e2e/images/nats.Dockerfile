# A stand-in for the upstream nats:<version>-alpine image, for machines that
# cannot pull it: the nats-server binary of the version pkg/go.mod pins,
# built on the host (CGO_ENABLED=0) by `make stand-ins`, FROM scratch, with
# a wget at the path busybox has it, so the healthcheck in
# deploy/compose.yaml runs unchanged. The entrypoint takes the upstream
# image's arguments (compose passes --config /etc/nats/nats.conf).
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY nats-server /usr/local/bin/nats-server
COPY wget /usr/bin/wget
ENV PATH=/usr/local/bin:/usr/bin
LABEL dev.stevedore.stand-in="nats"
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--config", "/etc/nats/nats-server.conf"]
