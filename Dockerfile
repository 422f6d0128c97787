# Multi-stage build of static apppassd and apppass binaries, run as a
# non-root user. The build step is .ci/build, the same script CI runs.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN .ci/build /out && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/apppassd /out/apppass /usr/local/bin/
# The embedded default (no MongoDB or NATS configured) keeps its files here.
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/apppass
USER nonroot:nonroot
ENV APPPASS_LISTEN=0.0.0.0:8080 APPPASS_DATA_DIR=/var/lib/apppass APPPASS_URL=http://127.0.0.1:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s CMD ["/usr/local/bin/apppass", "health"]
ENTRYPOINT ["/usr/local/bin/apppassd"]
