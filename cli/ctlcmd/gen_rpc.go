package ctlcmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/gen"
)

type genRPCOptions struct {
	out, module, zrpcReplace string
	importPaths              []string
	dryRun                   bool
}

func newGenRPCCommand() *cobra.Command {
	o := &genRPCOptions{}
	cmd := &cobra.Command{
		Use:   "rpc FILE.proto --out DIR",
		Short: "Generate a runnable zrpc service from the service in a .proto file",
		Long: `Generate the service of FILE.proto into DIR, goctl-style:

  <pkg>/*.pb.go, *_grpc.pb.go   messages (protoc-gen-go's own generator) and gRPC
                                stubs (protoc-gen-go-grpc's API)
  main.go                       -f etc/<name>.yaml; registers as <name>.rpc
  etc/<name>.yaml               go-zero's RpcServerConf keys (Name, ListenOn, ...)
  internal/config, internal/svc the config and the ServiceContext
  internal/logic/<rpc>logic.go  one file per RPC: your code goes here
  internal/server               glue from the gRPC API to the logic
  <name>client                  typed client: Dial("zrpc:///<name>.rpc"), New<Service>
  cmd/<name>client/main.go      an example call

<name> is the last element of the proto package ("shop.v1" → shop). The
messages' Go package goes in the directory go_package names when it is
relative ("./user") or inside the module, else in DIR/<package name>.
Imported .proto files are generated too, unless their go_package is
outside the module: such packages must exist already (go get them).

Running gen again regenerates the .pb.go files, internal/server and the
client package, and keeps every file you own (main.go, etc, config, svc,
logic, the example, go.mod) once you changed it; new RPCs get new logic
files. DIR/.zrpcgen records what gen wrote: files an earlier run wrote and
this one no longer does (after a go_package or proto package change) are
removed, unless changed since, and files you own but never changed are
brought up to date.
Everything is generated and checked in memory first: on any error nothing
is written.

When DIR is outside any Go module, --module names the new module and a
go.mod is written; zrpc itself is taken from a checkout (--zrpc-replace,
found automatically when zrpcctl runs inside one). When DIR is inside a
module, no go.mod is written.`,
		Example: `  zrpcctl gen rpc user.proto --out ./user --module example.com/user
  zrpcctl gen rpc api/shop/v1/shop.proto -I api --out ./shop --module example.com/shop
  zrpcctl gen rpc examples/user/user.proto --out examples/user      # inside this module`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			return o.run(cmd, args[0])
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.out, "out", "", "directory of the service (required)")
	fs.StringVar(&o.module, "module", "", "module path of a new module at --out (e.g. example.com/user)")
	fs.StringArrayVarP(&o.importPaths, "proto_path", "I", nil, "directory to search imports in (repeatable; the file's own directory is searched last)")
	fs.StringVar(&o.zrpcReplace, "zrpc-replace", "", "zrpc checkout a new go.mod replaces github.com/zrpcio/zrpc with (default: the one zrpcctl runs in, if any)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be written, write nothing")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func (o *genRPCOptions) run(cmd *cobra.Command, file string) error {
	cfg := gen.ServiceConfig{Proto: file, ImportPaths: o.importPaths, Out: o.out, Module: o.module, ZRPCReplace: o.zrpcReplace}
	w := cmd.OutOrStdout()
	if cfg.ZRPCReplace == "" {
		if wd, err := os.Getwd(); err == nil {
			if root, ok := gen.FindZRPCCheckout(wd); ok {
				cfg.ZRPCReplace = root
			}
		}
	}
	plan, err := gen.GenerateService(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	if !o.dryRun {
		if err := plan.Write(); err != nil {
			return err
		}
	}
	printPlan(w, plan, o.dryRun)
	replace := "" // the step a new module needs before it builds
	for _, f := range plan.Files {
		if f.Path != "go.mod" || f.Action != gen.Create {
			continue
		}
		if cfg.ZRPCReplace != "" {
			fmt.Fprintf(w, "go.mod replaces %s with %s\n", gen.ZRPCModule, cfg.ZRPCReplace)
		} else {
			replace = fmt.Sprintf("go mod edit -replace %s=/path/to/zrpc && go mod tidy && ", gen.ZRPCModule)
			fmt.Fprintf(w, "note: %s is not published yet: point go.mod at a checkout of it (or run gen again with --zrpc-replace)\n", gen.ZRPCModule)
		}
	}
	if !o.dryRun {
		fmt.Fprintf(w, "next: cd %s && %sgo run . -f %s  (registers as %s with the agent at $ZRPC_ADDR or 127.0.0.1:8400; start one with zrpcd agent --dev)\n",
			filepath.Clean(o.out), replace, plan.ConfigFile, plan.Registry)
	}
	return nil
}

// printPlan lists every file and what happened to it.
func printPlan(w io.Writer, plan *gen.Plan, dryRun bool) {
	kept := 0
	for _, f := range plan.Files {
		p := filepath.Join(plan.Out, filepath.FromSlash(f.Path))
		action := f.Action.String()
		if dryRun && (f.Action == gen.Create || f.Action == gen.Overwrite || f.Action == gen.Remove) {
			action = "would be " + action
		}
		if f.Action == gen.Keep {
			kept++
			fmt.Fprintf(w, "%-10s %s (yours: gen never overwrites it)\n", action, p)
			continue
		}
		if f.Action == gen.Remove {
			fmt.Fprintf(w, "%-10s %s (generated from this .proto before, and no longer)\n", action, p)
			continue
		}
		if f.Action == gen.Orphan {
			fmt.Fprintf(w, "%-10s %s (generated from this .proto before, and no longer; changed since, so gen leaves it: delete it, or move what you added, if it uses what gen no longer writes)\n", action, p)
			continue
		}
		fmt.Fprintf(w, "%-10s %s\n", action, p)
	}
	if kept > 0 {
		fmt.Fprintf(w, "%d file(s) kept as they were; delete one to have it generated again\n", kept)
	}
}
