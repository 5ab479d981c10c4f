package grpcapi

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/raftstore"
)

// maxAnswerBytes bounds the instances of one Get page, far below the 64 MiB
// message cap; maxUnpagedBytes those of a Get that asks for no pages (a
// client from before paging), which must fit in one message.
const (
	maxAnswerBytes  = 4 << 20
	maxUnpagedBytes = maxMessage - 1<<20
)

// pageToken says where a paged Get of service goes on: after instance id
// after, in the state of the service at revision rev, which held count
// instances. Neither names nor ids contain '/'.
type pageToken struct {
	rev     uint64
	count   int
	service string
	after   string
}

func (t pageToken) encode() string {
	raw := fmt.Sprintf("%d.%d.%s/%s", t.rev, t.count, t.service, t.after)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodePageToken(s string) (pageToken, error) {
	bad := apierr.Invalid("page_token", "is not a next_page_token of this API")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pageToken{}, bad
	}
	parts := strings.SplitN(string(raw), ".", 3)
	if len(parts) != 3 {
		return pageToken{}, bad
	}
	service, after, ok := strings.Cut(parts[2], "/")
	rev, err1 := strconv.ParseUint(parts[0], 10, 64)
	count, err2 := strconv.Atoi(parts[1])
	if !ok || after == "" || err1 != nil || err2 != nil || count < 0 {
		return pageToken{}, bad
	}
	return pageToken{rev: rev, count: count, service: service, after: after}, nil
}

// unchangedSince reports whether insts (a service's instances at this
// replica's revision cur) are the state the service had at rev with count
// instances: an instance created, replaced or changed in health since rev
// has a mod_revision above it, and a removed one changes the count.
func unchangedSince(insts []raftstore.EncodedInstance, cur, rev uint64, count int) bool {
	if cur < rev || len(insts) != count {
		return false
	}
	for _, inst := range insts {
		if inst.ModRevision() > rev {
			return false
		}
	}
	return true
}

// getPage answers one page of a Get from all, the service's instances
// sorted by id at revision rev: at most pageSize instances (0: no count
// bound) and maxAnswerBytes, after the token's position. A Get with neither
// page_size nor page_token is answered whole, as before paging, or refused
// (ErrTooLarge) when the service does not fit in one message: a client
// that does not page must not take a first page for the whole.
//
// The instances go out as the replica stores them, never decoded: their
// encodings are the response's instances field (setEncodedInstances).
func getPage(req *pb.GetRequest, all []raftstore.EncodedInstance, rev uint64) (*pb.GetResponse, error) {
	paged := req.PageSize > 0 || req.PageToken != ""
	tok := pageToken{rev: rev, count: len(all), service: req.Service}
	if req.PageToken != "" {
		t, err := decodePageToken(req.PageToken)
		if err != nil {
			return nil, err
		}
		if t.service != req.Service {
			return nil, apierr.Invalid("page_token", "continues a Get of service %s, not %s", t.service, req.Service)
		}
		if !unchangedSince(all, rev, t.rev, t.count) {
			return nil, fmt.Errorf("%w: service %s changed since revision %d of the first page; start the Get over",
				apierr.ErrPageExpired, req.Service, t.rev)
		}
		tok = t
	}
	insts := all
	if req.PassingOnly {
		insts = passing(insts)
	}
	first := 0
	if tok.after != "" {
		first = sort.Search(len(insts), func(i int) bool { return insts[i].ID > tok.after })
	}
	resp := &pb.GetResponse{Header: &pb.ResponseHeader{Revision: tok.rev}}
	if !paged {
		size := 0
		for _, inst := range insts {
			if size += len(inst.Encoding); size > maxUnpagedBytes {
				return nil, fmt.Errorf("%w: the %d instances of service %s do not fit in one message; ask for pages (page_size)",
					apierr.ErrTooLarge, len(insts), req.Service)
			}
		}
		setEncodedInstances(resp, insts)
		return resp, nil
	}
	last, size := first, 0
	for ; last < len(insts); last++ {
		sz := len(insts[last].Encoding)
		full := req.PageSize > 0 && last-first >= int(req.PageSize)
		if full || (last > first && size+sz > maxAnswerBytes) {
			tok.after = insts[last-1].ID
			resp.NextPageToken = tok.encode()
			break
		}
		size += sz
	}
	setEncodedInstances(resp, insts[first:last])
	return resp, nil
}

// setEncodedInstances puts insts in resp as the bytes of its instances
// field, in order: resp.Instances stays empty, and what is sent (and what
// a receiver decodes into Instances) is the same as had it held them.
func setEncodedInstances(resp *pb.GetResponse, insts []raftstore.EncodedInstance) {
	if len(insts) == 0 {
		return
	}
	n := 0
	for _, inst := range insts {
		n += instcodec.GetResponseInstanceSize(inst.Encoding)
	}
	raw := make([]byte, 0, n)
	for _, inst := range insts {
		raw = instcodec.AppendGetResponseInstance(raw, inst.Encoding)
	}
	resp.ProtoReflect().SetUnknown(raw)
}

// passing returns the passing instances of in.
func passing(in []raftstore.EncodedInstance) []raftstore.EncodedInstance {
	out := in[:0:0]
	for _, inst := range in {
		if inst.Health == pb.Health_PASSING {
			out = append(out, inst)
		}
	}
	return out
}
