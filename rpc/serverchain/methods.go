package serverchain

import "github.com/zrpcio/zrpc/internal/methodtable"

// MaxMethods is how many methods the metrics and the rate limiter keep
// apart. Calls of further methods are counted, timed and limited together
// under OtherMethod: a server with an unknown-service handler serves
// method names its callers choose, and a series or bucket for each would
// let a stranger grow its memory and its /metrics without end.
const MaxMethods = methodtable.Max

// OtherMethod is the method label of the calls past MaxMethods methods.
const OtherMethod = methodtable.Other
