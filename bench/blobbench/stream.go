package blobbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The plain stream's chunk sizes are zrpc's: a put sends 512 KiB per
// message (client.PutBlob), a get answers 256 KiB per message (the
// agent's get).
const (
	PutChunk = 512 << 10
	GetChunk = 256 << 10
)

// Listening starts the line the stream server writes once it accepts
// connections: "listening <addr>".
const Listening = "listening "

// nameKey is the metadata key naming the file a stream writes or reads.
const nameKey = "file"

// The plain stream service: Put is a client stream of chunks the server
// appends to a file and fsyncs before it answers, Get a server stream of
// the file's bytes. Messages are wrapperspb.BytesValue, protobuf as zrpc's.
const (
	serviceName = "zrpcblobbench.Stream"
	putMethod   = "/" + serviceName + "/Put"
	getMethod   = "/" + serviceName + "/Get"
)

var (
	putDesc = grpc.StreamDesc{StreamName: "Put", ClientStreams: true}
	getDesc = grpc.StreamDesc{StreamName: "Get", ServerStreams: true}
)

// streamServer stores the plain stream's files in dir.
type streamServer struct{ dir string }

func (s *streamServer) serviceDesc() *grpc.ServiceDesc {
	put, get := putDesc, getDesc
	put.Handler = func(_ any, st grpc.ServerStream) error { return s.put(st) }
	get.Handler = func(_ any, st grpc.ServerStream) error { return s.get(st) }
	return &grpc.ServiceDesc{
		ServiceName: serviceName,
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{put, get},
	}
}

// path returns the file a stream names in its metadata, which must be a
// plain file name.
func (s *streamServer) path(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(nameKey)
	if len(v) != 1 || v[0] == "" || v[0] != filepath.Base(v[0]) || strings.HasPrefix(v[0], ".") {
		return "", status.Errorf(codes.InvalidArgument, "metadata %q must name one plain file (got %q)", nameKey, v)
	}
	return filepath.Join(s.dir, v[0]), nil
}

// put writes the stream's chunks to a temporary file, fsyncs it and
// renames it to the file named, as a store that keeps what it
// acknowledges would.
func (s *streamServer) put(st grpc.ServerStream) error {
	path, err := s.path(st.Context())
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".put-*")
	if err != nil {
		return status.Errorf(codes.Internal, "create: %v", err)
	}
	defer os.Remove(tmp.Name())
	err = func() error {
		defer tmp.Close()
		for {
			var chunk wrapperspb.BytesValue
			if err := st.RecvMsg(&chunk); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			if _, err := tmp.Write(chunk.Value); err != nil {
				return status.Errorf(codes.Internal, "write: %v", err)
			}
		}
		if err := tmp.Sync(); err != nil {
			return status.Errorf(codes.Internal, "fsync: %v", err)
		}
		return tmp.Close()
	}()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return status.Errorf(codes.Internal, "rename: %v", err)
	}
	return st.SendMsg(&wrapperspb.BytesValue{})
}

// get streams the file named in GetChunk messages.
func (s *streamServer) get(st grpc.ServerStream) error {
	path, err := s.path(st.Context())
	if err != nil {
		return err
	}
	var req wrapperspb.BytesValue
	if err := st.RecvMsg(&req); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return status.Errorf(codes.NotFound, "open: %v", err)
	}
	defer f.Close()
	buf := make([]byte, GetChunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := st.SendMsg(&wrapperspb.BytesValue{Value: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "read: %v", err)
		}
	}
}

// Serve is the plain stream's server process: grpc-go with its defaults on
// listen, files in dir. It writes Listening and the address to out once it
// accepts connections and serves until ctx ends.
func Serve(ctx context.Context, listen, dir string, out io.Writer) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("serve: --dir %q must be an existing directory", dir)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := grpc.NewServer()
	s := &streamServer{dir: dir}
	srv.RegisterService(s.serviceDesc(), s)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintln(out, Listening+ln.Addr().String())
	select {
	case <-ctx.Done():
		srv.Stop()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

func dial(target string) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// StreamPut sends the file src over the plain stream to the server at
// target, to be stored as name, and returns once the server has fsynced
// it.
func StreamPut(ctx context.Context, target, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	defer f.Close()
	conn, err := dial(target)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, nameKey, name))
	defer cancel()
	st, err := conn.NewStream(ctx, &putDesc, putMethod)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	buf := make([]byte, PutChunk)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err := st.SendMsg(&wrapperspb.BytesValue{Value: buf[:n]}); err != nil {
				// The server's status says why it ended the stream.
				return fmt.Errorf("put: %w", st.RecvMsg(&wrapperspb.BytesValue{}))
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("put: read %s: %w", src, rerr)
		}
	}
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if err := st.RecvMsg(&wrapperspb.BytesValue{}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	return nil
}

// StreamGet reads the file name over the plain stream from the server at
// target into dst as zrpcctl's `blob get` writes its destination: into a
// temporary file beside it, fsynced, then renamed.
func StreamGet(ctx context.Context, target, name, dst string) error {
	conn, err := dial(target)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, nameKey, name))
	defer cancel()
	st, err := conn.NewStream(ctx, &getDesc, getMethod)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := st.SendMsg(&wrapperspb.BytesValue{}); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = func() error {
		defer tmp.Close()
		for {
			var chunk wrapperspb.BytesValue
			if err := st.RecvMsg(&chunk); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			if _, err := tmp.Write(chunk.Value); err != nil {
				return err
			}
		}
		if err := tmp.Sync(); err != nil {
			return err
		}
		return tmp.Close()
	}()
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}
