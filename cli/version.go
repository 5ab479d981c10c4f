package cli

// Version and Commit identify the build; set them with
// -ldflags "-X github.com/zrpcio/zrpc/cli.Version=... -X github.com/zrpcio/zrpc/cli.Commit=...".
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

// VersionString is Version, followed by the commit in parentheses when it
// is set: what `zrpcd version` and the agent's start-up line print.
func VersionString() string {
	if Commit == "" {
		return Version
	}
	return Version + " (" + Commit + ")"
}
