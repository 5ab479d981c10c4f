package raftstore

// maxSharedValues bounds the table of sharedValues; a table that fills up
// starts over (instances stored before keep what they share).
const maxSharedValues = 1 << 16

// sharedValues lets stored instances share the strings that many of them
// hold alike: the names of services, nodes and sessions, which the FSM
// keeps beside each encoded instance (storedInstance) and as map keys. A
// registry of a hundred thousand instances of a few services on a few
// agents holds a few of each instead of one per instance. Sharing is
// invisible to readers; it changes what the registry's memory holds, never
// its state. Only the FSM goroutine uses it, under the FSM's lock.
type sharedValues struct {
	strings map[string]string
}

func newSharedValues() *sharedValues {
	return &sharedValues{strings: make(map[string]string)}
}

// string returns the shared string equal to v. A nil sharedValues shares
// nothing.
func (s *sharedValues) string(v string) string {
	if v == "" || s == nil {
		return v
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
