// Package logic is what the user.rpc service does: one file per RPC
// of UserService. zrpcctl gen writes a file for each new RPC and never
// overwrites one that exists.
package logic
