package grpcapi

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// Field numbers of WatchResponse: header and events.
const (
	watchHeaderField protowire.Number = 1
	watchEventsField protowire.Number = 3
)

// maxEncodedEvents bounds the events whose encoding is kept (each keeps
// its event, and so its instance, alive): the latest ones, which are
// those watchers that keep up are sent; a watcher far behind has its
// events encoded for it, as any other message.
const maxEncodedEvents = 8192

// watchCodec is the agent's gRPC codec: protobuf (internal/wirecodec, with
// its pooled buffers and shard payloads by reference), except that the events
// of a watch response are encoded once for every watcher they go to. A
// registry event is one object, shared by the ring and every watcher's
// queue, and never changed, so its bytes can be kept and copied into each
// watcher's message instead of encoding it once per watcher: with 10,000
// watchers of one service, encoding was most of what an event cost the
// agent. Snapshot pages (new events per watcher) are encoded as usual.
type watchCodec struct {
	base   encoding.CodecV2
	events *encodedEvents
}

func newWatchCodec() watchCodec {
	return watchCodec{base: wirecodec.Codec{}, events: newEncodedEvents(maxEncodedEvents)}
}

func (c watchCodec) Name() string { return c.base.Name() }

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

// Field numbers of WatchManyResponse: the watch's id and its response.
const (
	watchManyIDField       protowire.Number = 1
	watchManyResponseField protowire.Number = 2
)

func (c watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	var buf []byte
	var err error
	switch r := v.(type) {
	case *pb.WatchResponse:
		if !sharedEvents(r) {
			return c.base.Marshal(v)
		}
		buf, err = c.marshalEvents(r, 0, false)
	case *pb.WatchManyResponse:
		if r.Ended != nil || r.ProgressNotifyMs != 0 || !sharedEvents(r.Response) {
			return c.base.Marshal(v)
		}
		buf, err = c.marshalEvents(r.Response, r.WatchId, true)
	default:
		return c.base.Marshal(v)
	}
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
}

// sharedEvents reports whether r holds events of the registry's ring
// (neither a snapshot nor a part with more to come), whose encodings are
// kept, and no field marshalEvents does not write (the cluster id of a
// watch's first response).
func sharedEvents(r *pb.WatchResponse) bool {
	return r != nil && len(r.Events) > 0 && !r.Snapshot && !r.More && r.ClusterId == ""
}

// marshalEvents encodes r (a response of events, neither a snapshot nor
// a part with more to come) as its header followed by each event's kept
// bytes: the same fields protobuf's own encoding writes. With many set it
// encodes r as the response of watch id of a WatchManyResponse.
func (c watchCodec) marshalEvents(r *pb.WatchResponse, id uint64, many bool) ([]byte, error) {
	// Written straight into the message's buffer: a response goes to each
	// watcher of its service, and what it allocates is collected as often.
	headSize, inner := 0, 0
	if r.Header != nil {
		headSize = proto.Size(r.Header)
		inner = protowire.SizeTag(watchHeaderField) + protowire.SizeBytes(headSize)
	}
	var small [4][]byte
	raws := small[:0]
	for _, e := range r.Events {
		raw, err := c.events.encoded(e)
		if err != nil {
			return nil, fmt.Errorf("encode watch event: %w", err)
		}
		raws = append(raws, raw)
		inner += protowire.SizeTag(watchEventsField) + protowire.SizeBytes(len(raw))
	}
	size := inner
	if many {
		size = protowire.SizeTag(watchManyResponseField) + protowire.SizeBytes(inner)
		if id != 0 {
			size += protowire.SizeTag(watchManyIDField) + protowire.SizeVarint(id)
		}
	}
	buf := make([]byte, 0, size)
	if many {
		if id != 0 {
			buf = protowire.AppendTag(buf, watchManyIDField, protowire.VarintType)
			buf = protowire.AppendVarint(buf, id)
		}
		buf = protowire.AppendTag(buf, watchManyResponseField, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(inner))
	}
	if r.Header != nil {
		buf = protowire.AppendTag(buf, watchHeaderField, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(headSize))
		var err error
		if buf, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(buf, r.Header); err != nil {
			return nil, fmt.Errorf("encode watch response header: %w", err)
		}
	}
	for _, raw := range raws {
		buf = protowire.AppendTag(buf, watchEventsField, protowire.BytesType)
		buf = protowire.AppendBytes(buf, raw)
	}
	return buf, nil
}

// encodedEvents keeps the encoding of the last max events encoded.
type encodedEvents struct {
	bytes sync.Map // *pb.Event -> []byte

	mu    sync.Mutex
	order []*pb.Event // ring of the events kept, oldest at next once full
	next  int
	max   int
}

func newEncodedEvents(max int) *encodedEvents { return &encodedEvents{max: max} }

// encoded returns e's encoding, kept from an earlier call when there was
// one.
func (k *encodedEvents) encoded(e *pb.Event) ([]byte, error) {
	if b, ok := k.bytes.Load(e); ok {
		return b.([]byte), nil
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return nil, err
	}
	if _, loaded := k.bytes.LoadOrStore(e, b); !loaded {
		k.keep(e)
	}
	return b, nil
}

// keep remembers that e's encoding is kept, forgetting the oldest's once
// max are.
func (k *encodedEvents) keep(e *pb.Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.order) < k.max {
		k.order = append(k.order, e)
		return
	}
	k.bytes.Delete(k.order[k.next])
	k.order[k.next] = e
	k.next = (k.next + 1) % k.max
}
