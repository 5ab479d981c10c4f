package ctlcmd

import (
	"cmp"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

func newSnapshotCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, inspect and restore snapshots of the cluster's state",
		Long: `A snapshot file is a point-in-time copy of the whole Raft state: the
registry (services, instances, sessions, agents), blob metadata (not the
blobs' bytes, which stay in the agents' shard files) and the ACL policies
and tokens. It has a header (format, Raft index and term, registry
revision, when it was made), the state machine's own snapshot, and a
SHA-256 trailer over all of it.

A snapshot holds the ACL tokens' hashes and every registered instance:
keep it private. It leaves out the cluster's secret (with which agents
prove they belong): a restore keeps the restoring cluster's own identity.`,
		Example: `  zrpcctl snapshot save backup.snap
  zrpcctl snapshot inspect backup.snap
  zrpcctl snapshot restore backup.snap`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSnapshotSaveCommand(o), newSnapshotInspectCommand(o), newSnapshotRestoreCommand(o))
	return cmd
}

// snapshotInfo is what the commands print of a snapshot file.
func snapshotInfo(path string, info *snapshot.Info) *zrpcpb.SnapshotInfo {
	return &zrpcpb.SnapshotInfo{
		Path: path, Format: uint32(info.Format), Index: info.Index, Term: info.Term, Revision: info.Revision,
		Created: info.Created.UTC().Format(time.RFC3339Nano), FileBytes: info.FileSize, Sha256: info.SHA256,
		StateFormat: info.StateFormat, Nodes: info.Nodes, Sessions: info.Sessions, Services: info.Services,
		Instances: info.Instances, RequestRecords: info.Requests, Blobs: info.Blobs, BlobBlocks: info.BlobBlocks,
		PendingBlobs: info.PendingBlobs, AclPolicies: info.ACLPolicies, AclTokens: info.ACLTokens, ClusterId: info.ClusterID,
	}
}

func snapshotFields(s *zrpcpb.SnapshotInfo) []field {
	u := func(v uint64) string { return fmt.Sprint(v) }
	return []field{
		{"Path", s.Path},
		{"Cluster", cmp.Or(s.ClusterId, "-")},
		{"Format", fmt.Sprint(s.Format)},
		{"Index", u(s.Index)},
		{"Term", u(s.Term)},
		{"Revision", u(s.Revision)},
		{"Created", s.Created},
		{"Size", fmt.Sprintf("%s (%d bytes)", formatSize(s.FileBytes), s.FileBytes)},
		{"SHA-256", s.Sha256},
		{"State format", fmt.Sprint(s.StateFormat)},
		{"Agents", u(s.Nodes)},
		{"Sessions", u(s.Sessions)},
		{"Services", u(s.Services)},
		{"Instances", u(s.Instances)},
		{"Blobs", fmt.Sprintf("%d (%d blocks, %d pending)", s.Blobs, s.BlobBlocks, s.PendingBlobs)},
		{"ACL policies", u(s.AclPolicies)},
		{"ACL tokens", u(s.AclTokens)},
		{"Request records", u(s.RequestRecords)},
	}
}
