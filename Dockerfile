# Static manager and imager on a distroless non-root base (the imager Jobs
# run the same image). Without Docker, `make image` builds the same image as a
# docker-archive tarball with hack/ociimage.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/imager ./imager && \
    CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/manager .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/manager /out/imager /
USER 65532:65532
ENTRYPOINT ["/manager"]
