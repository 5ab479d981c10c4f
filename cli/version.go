package cli

// Version and Commit identify the build; set them with
// -ldflags "-X github.com/zrpcio/zrpc/cli.Version=... -X github.com/zrpcio/zrpc/cli.Commit=...".
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

func buildString() string {
	if Commit == "" {
		return Version
	}
	return Version + " (" + Commit + ")"
}
