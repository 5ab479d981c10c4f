// Command userclient calls the user.rpc service once through the
// generated client package and prints the answer:
//
//	go run ./examples/user/cmd/userclient -id 2
//
// zrpcctl gen wrote it once; the -id flag was added by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zrpcio/zrpc/rpc"

	"github.com/zrpcio/zrpc/examples/user/userclient"
)

func main() {
	agents := flag.String("agents", "", "comma-separated agent addresses (default $ZRPC_ADDR, else 127.0.0.1:8400)")
	wait := flag.Duration("wait", 5*time.Second, "how long to wait for an instance and its answer")
	id := flag.Int64("id", 1, "the user id to look up")
	flag.Parse()
	if err := run(*agents, *wait, *id); err != nil {
		fmt.Fprintln(os.Stderr, "userclient:", err)
		os.Exit(1)
	}
}

func run(agents string, wait time.Duration, id int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	opts := []rpc.DialOption{rpc.WithWaitReady()}
	if agents != "" {
		opts = append(opts, rpc.WithAgents(strings.Split(agents, ",")...))
	}
	conn, err := userclient.Dial(ctx, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := userclient.NewUserService(conn)

	resp, err := client.GetUserInfo(ctx, &userclient.UserRequest{UserId: id})
	if err != nil {
		return err
	}
	fmt.Println(protojson.Format(resp))
	return nil
}
