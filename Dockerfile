# Multi-stage build of a static apppassd, run as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/apppassd ./cmd/apppassd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/apppassd /usr/local/bin/apppassd
USER nonroot:nonroot
ENV APPPASS_LISTEN=0.0.0.0:8080 APPPASS_DATA_DIR=/var/lib/apppass
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/apppassd"]
