package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestBuildIsNotASetting: the agent's build string is a Config field that
// no file key, flag or environment variable sets, and that the reference
// does not list.
func TestBuildIsNotASetting(t *testing.T) {
	for _, s := range Settings() {
		if s.Key == "-" || s.Key == "" || s.Key == "build" {
			t.Fatalf("Settings() lists %+v", s)
		}
	}
	c := Default()
	c.Build = "v1.2.3"
	if err := c.LoadEnv(func(k string) (string, bool) { return "v9", k == EnvPrefix+"BUILD" }); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("name: a1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if c.Build != "v1.2.3" {
		t.Fatalf("Build = %q after loading the environment and a file, want v1.2.3", c.Build)
	}
	if err := os.WriteFile(path, []byte("build: v9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFile(path); err == nil {
		t.Fatal("a config file setting build was accepted")
	}
}

// TestAgentReportsItsConfiguredBuild: the agent answers Version, Status
// and its own node record with Config.Build, and with "dev" when it is
// empty.
func TestAgentReportsItsConfiguredBuild(t *testing.T) {
	for _, tc := range []struct{ build, want string }{{"v1.2.3", "v1.2.3"}, {"", "dev"}} {
		cfg := testConfig(t)
		cfg.Build = tc.build
		n := startNode(t, cfg)
		conn, _ := dial(t, n.GRPCAddr())
		st := pb.NewStatusClient(conn)
		v, err := st.Version(ctxT(t), &pb.VersionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := st.Status(ctxT(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if v.Version != tc.want || s.Build != tc.want {
			t.Fatalf("Build %q: Version %q, Status %q; want %q", tc.build, v.Version, s.Build, tc.want)
		}
		waitFor(t, 5*time.Second, "the agent's node record names its build", func() bool {
			self := n.Store().FSM().Node(n.Name())
			return self != nil && self.Build == tc.want
		})
	}
}
