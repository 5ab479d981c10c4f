package clienttest

import (
	"context"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

func (a *Agent) Register(ctx context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
	return unary(ctx, a, req, a.OnRegister, a.UnimplementedRegistryServer.Register)
}

func (a *Agent) Deregister(ctx context.Context, req *zrpcpb.DeregisterRequest) (*zrpcpb.DeregisterResponse, error) {
	return unary(ctx, a, req, a.OnDeregister, a.UnimplementedRegistryServer.Deregister)
}

func (a *Agent) RenewTTL(ctx context.Context, req *zrpcpb.RenewTTLRequest) (*zrpcpb.RenewTTLResponse, error) {
	return unary(ctx, a, req, a.OnRenewTTL, a.UnimplementedRegistryServer.RenewTTL)
}

func (a *Agent) Get(ctx context.Context, req *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
	return unary(ctx, a, req, a.OnGet, a.UnimplementedRegistryServer.Get)
}

func (a *Agent) List(ctx context.Context, req *zrpcpb.ListRequest) (*zrpcpb.ListResponse, error) {
	return unary(ctx, a, req, a.OnList, a.UnimplementedRegistryServer.List)
}

func (a *Agent) Status(ctx context.Context, req *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
	return unary(ctx, a, req, a.OnStatus, a.UnimplementedStatusServer.Status)
}

func (a *Agent) Members(ctx context.Context, req *zrpcpb.MembersRequest) (*zrpcpb.MembersResponse, error) {
	return unary(ctx, a, req, a.OnMembers, a.UnimplementedStatusServer.Members)
}

func (a *Agent) Peers(ctx context.Context, req *zrpcpb.PeersRequest) (*zrpcpb.PeersResponse, error) {
	return unary(ctx, a, req, a.OnPeers, a.UnimplementedStatusServer.Peers)
}

func (a *Agent) Version(ctx context.Context, req *zrpcpb.VersionRequest) (*zrpcpb.VersionResponse, error) {
	return unary(ctx, a, req, a.OnVersion, a.UnimplementedStatusServer.Version)
}

func (a *Agent) Watch(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
	a.calls.Add(1)
	if a.OnWatch == nil {
		return a.UnimplementedRegistryServer.Watch(req, stream)
	}
	return a.OnWatch(req, stream)
}

func (a *Agent) WatchMany(stream zrpcpb.Registry_WatchManyServer) error {
	a.calls.Add(1)
	if a.OnWatchMany == nil {
		return a.UnimplementedRegistryServer.WatchMany(stream)
	}
	return a.OnWatchMany(stream)
}

func (a *Agent) Session(stream zrpcpb.Registry_SessionServer) error {
	a.calls.Add(1)
	if a.OnSession == nil {
		return a.UnimplementedRegistryServer.Session(stream)
	}
	return a.OnSession(stream)
}
