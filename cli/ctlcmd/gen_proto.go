package ctlcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/gen"
)

func newGenProtoCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "proto NAME",
		Short: "Write a starter NAME.proto with one service",
		Long: `Write NAME.proto: a proto3 file with package NAME, go_package "./NAME" (or
"./NAMEpb" where NAME cannot name a Go package or its directory: func,
internal) and a service with one unary RPC, ready for ` + "`zrpcctl gen rpc`" + `.
An existing file is never overwritten.`,
		Example: `  zrpcctl gen proto user                # writes ./user.proto
  zrpcctl gen proto order --dir protos`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := gen.StarterProto(args[0])
			if err != nil {
				return err
			}
			cmd.SilenceUsage = true
			path := filepath.Join(dir, args[0]+".proto")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists; not overwritten", path)
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			_, err = f.Write(src)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
				return fmt.Errorf("write %s: %w", path, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created  %s\nnext: zrpcctl gen rpc %s --out %s --module example.com/%s\n",
				path, path, filepath.Join(dir, args[0]), args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write NAME.proto in")
	return cmd
}
