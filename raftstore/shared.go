package raftstore

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// maxSharedValues bounds each table of sharedValues; a table that fills
// up starts over (instances stored before keep what they share).
const maxSharedValues = 1 << 16

// sharedValues lets stored instances share the parts that many of them
// hold alike: the health check (a message and its durations, some 200
// bytes), the tag list, and the strings that name services, nodes,
// zones, versions, tags and metadata keys. A registry of a hundred
// thousand instances registered by a few programs holds a few of each
// instead of one per instance. Stored instances are immutable, so sharing
// is invisible to readers; it changes what the registry's memory holds,
// never its state. Only the FSM goroutine uses it, under the FSM's lock.
type sharedValues struct {
	checks  map[string]*pb.Check // deterministic encoding -> check
	tags    map[string][]string  // tags joined by NUL -> tags
	strings map[string]string
	buf     []byte
}

func newSharedValues() *sharedValues {
	return &sharedValues{
		checks:  make(map[string]*pb.Check),
		tags:    make(map[string][]string),
		strings: make(map[string]string),
	}
}

// share replaces inst's check, tags and names by equal values that other
// stored instances already hold, if any. inst must not be visible to any
// other goroutine yet.
func (s *sharedValues) share(inst *pb.Instance) {
	inst.Service = s.string(inst.Service)
	inst.Node = s.string(inst.Node)
	inst.Session = s.string(inst.Session)
	inst.Zone = s.string(inst.Zone)
	inst.Version = s.string(inst.Version)
	if inst.Check != nil {
		inst.Check = s.check(inst.Check)
	}
	if len(inst.Tags) > 0 {
		inst.Tags = s.tagList(inst.Tags)
	}
	// Metadata keys repeat across instances; values mostly do not.
	// Assigning to a key that is there stores the key given, so this
	// swaps each key for the shared one without growing the map.
	for k, v := range inst.Metadata {
		inst.Metadata[s.string(k)] = v
	}
}

func (s *sharedValues) string(v string) string {
	if v == "" {
		return ""
	}
	if c, ok := s.strings[v]; ok {
		return c
	}
	if len(s.strings) >= maxSharedValues {
		clear(s.strings)
	}
	s.strings[v] = v
	return v
}

func (s *sharedValues) check(c *pb.Check) *pb.Check {
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(s.buf[:0], c)
	if err != nil {
		return c // unencodable: keep it to itself
	}
	s.buf = b
	if shared, ok := s.checks[string(b)]; ok {
		return shared
	}
	if len(s.checks) >= maxSharedValues {
		clear(s.checks)
	}
	s.checks[string(b)] = c
	return c
}

func (s *sharedValues) tagList(tags []string) []string {
	key := strings.Join(tags, "\x00")
	if shared, ok := s.tags[key]; ok && slices.Equal(shared, tags) {
		return shared
	}
	if len(s.tags) >= maxSharedValues {
		clear(s.tags)
	}
	// Full to capacity, so that an append to it copies rather than
	// writing into what other instances hold.
	own := make([]string, len(tags))
	for i, t := range tags {
		own[i] = s.string(t)
	}
	s.tags[key] = own
	return own
}
