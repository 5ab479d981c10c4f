// Package svc holds what the user.rpc service's logic shares: the
// config, the logger, and the user table. zrpcctl gen wrote it once; the
// table was added by hand.
package svc

import (
	"log/slog"
	"sync"

	"github.com/zrpcio/zrpc/examples/user/internal/config"
)

// ServiceContext carries the service's dependencies to every logic.
type ServiceContext struct {
	Config config.Config
	Log    *slog.Logger
	Users  *UserTable
}

// NewServiceContext builds the service's dependencies from its config.
func NewServiceContext(c config.Config, log *slog.Logger) *ServiceContext {
	return &ServiceContext{Config: c, Log: log, Users: NewUserTable()}
}

// User is one row of the user table.
type User struct {
	ID       int64
	Username string
	Email    string
}

// UserTable is an in-memory user table, safe for concurrent use; a real
// service would keep a database client here instead.
type UserTable struct {
	mu    sync.RWMutex
	users map[int64]User
}

// NewUserTable returns a table holding three example users, ids 1 to 3.
func NewUserTable() *UserTable {
	t := &UserTable{users: map[int64]User{}}
	for _, u := range []User{
		{ID: 1, Username: "alice", Email: "alice@example.com"},
		{ID: 2, Username: "bob", Email: "bob@example.com"},
		{ID: 3, Username: "carol", Email: "carol@example.com"},
	} {
		t.Put(u)
	}
	return t
}

// Get returns the user with the id, if there is one.
func (t *UserTable) Get(id int64) (User, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	u, ok := t.users[id]
	return u, ok
}

// Put adds or replaces a user.
func (t *UserTable) Put(u User) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users[u.ID] = u
}
