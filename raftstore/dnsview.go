package raftstore

import (
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Fields PassingInstances leaves out: DNS answers show none of them, and
// a health output alone may take 4 KiB.
var (
	checkField        = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "check")
	healthOutputField = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "health_output")
)

// PassingInstances returns the passing instances of service in no
// particular order, decoded without their metadata, check and health
// output; known says whether service has instances at all, whatever
// their health; rev is the revision they reflect. It decodes no other
// instance: the health kept beside each encoding picks them, so that a
// service of 100,000 instances, most of them critical, costs a DNS
// question only its passing ones.
func (f *FSM) PassingInstances(service string) (passing []*pb.Instance, known bool, rev uint64) {
	f.mu.RLock()
	byID := f.services[service]
	var encs []storedInstance
	for _, st := range byID {
		if st.health == pb.Health_PASSING {
			encs = append(encs, st)
		}
	}
	known, rev = len(byID) > 0, f.revision
	f.mu.RUnlock()
	passing = make([]*pb.Instance, len(encs))
	var buf []byte
	for i, st := range encs {
		passing[i], buf = st.instanceWithout(buf, metadataField, checkField, healthOutputField)
	}
	return passing, known, rev
}

// HasInstances reports whether service has instances, whatever their
// health, without reading any.
func (f *FSM) HasInstances(service string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.services[service]) > 0
}
