package logic

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/examples/user/internal/svc"
	"github.com/zrpcio/zrpc/examples/user/user"
)

// GetUserInfoLogic serves UserService.GetUserInfo.
//
// GetUserInfo returns one user by id: NotFound when there is none.
type GetUserInfoLogic struct {
	ctx    context.Context
	svcCtx *svc.ServiceContext
	log    *slog.Logger
}

// NewGetUserInfoLogic returns the logic of one GetUserInfo call.
func NewGetUserInfoLogic(ctx context.Context, svcCtx *svc.ServiceContext) *GetUserInfoLogic {
	return &GetUserInfoLogic{ctx: ctx, svcCtx: svcCtx, log: svcCtx.Log.With("rpc", "GetUserInfo")}
}

// GetUserInfo looks the user up in the table.
func (l *GetUserInfoLogic) GetUserInfo(in *user.UserRequest) (*user.UserResponse, error) {
	if in.GetUserId() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "user_id: %d is not a user id (want > 0)", in.GetUserId())
	}
	u, ok := l.svcCtx.Users.Get(in.GetUserId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "user %d not found", in.GetUserId())
	}
	l.log.DebugContext(l.ctx, "found user", "user_id", u.ID)
	return &user.UserResponse{UserId: u.ID, Username: u.Username, Email: u.Email}, nil
}
