package ctlcmd

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// tokenEnv is the environment variable that carries an ACL token.
const tokenEnv = "ZRPC_TOKEN"

// maxTokenFile bounds what --token-file reads.
const maxTokenFile = 4 << 10

// tokenFlags are the ways to give zrpcctl an ACL token: --token-file (a
// file holding the secret), $ZRPC_TOKEN, or --token (visible to anyone
// who can list processes, so zrpcctl warns).
type tokenFlags struct {
	token string
	file  string
}

func (f *tokenFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.file, "token-file", "", "file holding the ACL token sent with every call (env "+tokenEnv+" holds the token itself)")
	fs.StringVar(&f.token, "token", "", "ACL token sent with every call; visible in the process list, prefer --token-file or $"+tokenEnv)
}

// resolve returns the token to send ("" for none): --token-file, then
// --token, then $ZRPC_TOKEN. Both flags at once is an error.
func (f *tokenFlags) resolve(cmd *cobra.Command) (string, error) {
	fileSet, tokenSet := cmd.Flags().Changed("token-file"), cmd.Flags().Changed("token")
	switch {
	case fileSet && tokenSet:
		return "", fmt.Errorf("--token and --token-file are both set: give one")
	case fileSet:
		return readTokenFile(f.file)
	case tokenSet:
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: a token given with --token is visible to other users in the process list; prefer --token-file or $%s\n", tokenEnv)
		if f.token == "" {
			return "", fmt.Errorf("--token is empty")
		}
		return f.token, nil
	}
	return strings.TrimSpace(os.Getenv(tokenEnv)), nil
}

// readTokenFile reads a token from path, without surrounding white space.
func readTokenFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("--token-file %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("--token-file %s: more than %d bytes; it should hold only the token", path, maxTokenFile)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return token, nil
}
