package grpcapi

import (
	"context"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node/health"
)

// prepareInstance validates a registration and sets what the agent owns:
// the owning node and the initial health.
func (s *Registry) prepareInstance(in *pb.Instance, session string) error {
	if err := validateInstance(in); err != nil {
		return err
	}
	in.Node = s.cfg.Agent
	in.Session = session
	in.CreateRevision, in.ModRevision, in.HealthSince = 0, 0, 0
	if in.Check.GetGrpc() {
		in.Health, in.HealthOutput = pb.Health_CRITICAL, health.AwaitingFirstCheck
	} else {
		in.Health, in.HealthOutput = pb.Health_PASSING, ""
	}
	return nil
}

func (s *Registry) register(ctx context.Context, in *pb.Instance, session string) (*pb.Instance, uint64, error) {
	if err := s.prepareInstance(in, session); err != nil {
		return nil, 0, err
	}
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_Register{Register: in}})
	if err != nil {
		return nil, 0, err
	}
	// The replica stored in as sent, with what the state machine sets
	// (raftstore.FSM.applyRegister): answer in with that, read without
	// decoding the stored instance.
	if create, mod, since, ok := s.cfg.Replica.InstanceStamp(in.Service, in.Id); ok && mod == rev {
		in.CreateRevision, in.ModRevision, in.HealthSince = create, mod, since
		return in, rev, nil
	}
	in.ModRevision = rev // this replica lags (Cluster.Propose); answer with what was sent
	return in, rev, nil
}

func (s *Registry) deregister(ctx context.Context, service, id string) (uint64, error) {
	if err := validName("service", service); err != nil {
		return 0, err
	}
	if err := validName("id", id); err != nil {
		return 0, err
	}
	return s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: service, Id: id}}})
}

func (s *Registry) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	ctx, err := WithRequestID(ctx, "register", req.RequestId)
	if err != nil {
		return nil, err
	}
	inst, rev, err := s.register(ctx, req.Instance, "")
	if err != nil {
		return nil, err
	}
	return &pb.RegisterResponse{Header: s.header(rev), Instance: inst}, nil
}

func (s *Registry) Deregister(ctx context.Context, req *pb.DeregisterRequest) (*pb.DeregisterResponse, error) {
	ctx, err := WithRequestID(ctx, "deregister", req.RequestId)
	if err != nil {
		return nil, err
	}
	rev, err := s.deregister(ctx, req.Service, req.Id)
	if err != nil {
		return nil, err
	}
	return &pb.DeregisterResponse{Header: s.header(rev)}, nil
}

func (s *Registry) RenewTTL(ctx context.Context, req *pb.RenewTTLRequest) (*pb.RenewTTLResponse, error) {
	if err := validName("service", req.Service); err != nil {
		return nil, err
	}
	if err := validName("id", req.Id); err != nil {
		return nil, err
	}
	var resp *pb.RenewTTLResponse
	err := s.cfg.Cluster.Write(ctx,
		func() error {
			rev, err := s.cfg.Health.RenewTTL(ctx, req.Service, req.Id)
			resp = &pb.RenewTTLResponse{Header: s.header(rev)}
			return err
		},
		func(ctx context.Context, c grpc.ClientConnInterface) (err error) {
			resp, err = pb.NewRegistryClient(c).RenewTTL(ctx, req)
			return err
		})
	return resp, err
}

// read runs a query after checking that this agent may answer with the
// requested consistency; CONSISTENT reads are forwarded to the leader.
func (s *Registry) read(ctx context.Context, c pb.Consistency, local func() error, remote func(context.Context, pb.RegistryClient) error) error {
	if c != pb.Consistency_CONSISTENT {
		if err := s.cfg.Cluster.CheckRead(ctx, c); err != nil {
			return err
		}
		return local()
	}
	return s.cfg.Cluster.OnLeader(ctx,
		func() error {
			if err := s.cfg.Cluster.CheckRead(ctx, c); err != nil {
				return err
			}
			return local()
		},
		func(ctx context.Context, conn grpc.ClientConnInterface) error {
			return remote(ctx, pb.NewRegistryClient(conn))
		})
}

// Get answers one page of a service's instances (see getPage): a service too
// large for one message takes several.
func (s *Registry) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	if err := validName("service", req.Service); err != nil {
		return nil, err
	}
	var resp *pb.GetResponse
	err := s.read(ctx, req.Consistency,
		func() (err error) {
			insts, rev := s.cfg.Replica.EncodedInstances(req.Service)
			resp, err = getPage(req, insts, rev)
			if err == nil {
				resp.Header.ServedBy = s.cfg.Agent
			}
			return err
		},
		func(ctx context.Context, c pb.RegistryClient) (err error) {
			resp, err = c.Get(ctx, req)
			return err
		})
	return resp, err
}

func (s *Registry) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	var resp *pb.ListResponse
	err := s.read(ctx, req.Consistency,
		func() error {
			svcs, rev := s.cfg.Replica.Services()
			resp = &pb.ListResponse{Header: s.header(rev), Services: svcs}
			return nil
		},
		func(ctx context.Context, c pb.RegistryClient) (err error) {
			resp, err = c.List(ctx, req)
			return err
		})
	return resp, err
}

// Watch streams registry changes from the local replica (see serveWatch).
// streamContext returns a context of a stream's that also ends when the
// agent begins to close, its cancel, and done, which frees it.
func (s *Registry) streamContext(stream context.Context) (ctx context.Context, cancel context.CancelCauseFunc, done func()) {
	ctx, cancel = context.WithCancelCause(stream)
	stop := context.AfterFunc(s.ctx, func() { cancel(nil) })
	return ctx, cancel, func() {
		stop()
		cancel(nil)
	}
}

func (s *Registry) Watch(req *pb.WatchRequest, stream pb.Registry_WatchServer) error {
	if req.Service != "" {
		if err := validName("service", req.Service); err != nil {
			return err
		}
	}
	release, err := s.watches.take()
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel, done := s.streamContext(stream.Context())
	defer done()
	if req.RequireLeader {
		contact, err := s.leaderContact()
		if err != nil {
			return err
		}
		defer context.AfterFunc(contact, func() { cancel(context.Cause(contact)) })()
	}
	s.cfg.Metrics.WatchStarted()
	defer s.cfg.Metrics.WatchEnded()

	from := req.FromRevision
	if s.resumesOtherCluster(req) {
		s.logOtherCluster(req)
		from = 0 // another history's revision: start over with a snapshot
	}
	w := s.cfg.Replica.Watch(req.Service, from)
	err = s.serveWatch(ctx, cancel, w, from, stream)
	if s.ctx.Err() != nil {
		return apierr.ErrShuttingDown
	}
	return err
}
