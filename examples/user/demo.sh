#!/usr/bin/env bash
# The walk-through of examples/user/README.md, end to end (`make demo`): a
# dev agent, the user.rpc service registering with it, the registry, a call
# through the generated client. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
export ZRPC_ADDR=127.0.0.1:8400

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# until_up PID TRIES CMD...: run CMD every 0.2 s until it succeeds, at most
# TRIES times; give up at once when the process PID (started here) has exited.
until_up() {
	local pid=$1 tries=$2
	shift 2
	for _ in $(seq "$tries"); do
		kill -0 "$pid" 2>/dev/null || return 1
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	return 1
}

fail() {
	echo "demo: $1" >&2
	for log in "$work"/*.log; do
		[ -f "$log" ] || continue # no log yet
		echo "--- $log" >&2
		cat "$log" >&2
	done
	exit 1
}

step() { printf '\n$ %s\n' "$*"; }

$GO build -o "$work/zrpcd" ./cmd/zrpcd
$GO build -o "$work/zrpcctl" ./cmd/zrpcctl
$GO build -o "$work/user" ./examples/user
$GO build -o "$work/userclient" ./examples/user/cmd/userclient

step "zrpcctl gen rpc examples/user/user.proto --out examples/user --dry-run"
"$work/zrpcctl" gen rpc examples/user/user.proto --out examples/user --dry-run

step "zrpcd agent --dev &"
if "$work/zrpcctl" status >/dev/null 2>&1; then
	fail "an agent already answers at $ZRPC_ADDR: stop it first (the demo starts its own on the default ports)"
fi
"$work/zrpcd" agent --dev >"$work/agent.log" 2>&1 &
pids+=($!)
until_up "$!" 150 "$work/zrpcctl" status ||
	fail "the agent did not start (its log is below: is one of the ports 8400-8402, 8480, 8600 taken?)"
echo "agent ready at $ZRPC_ADDR"

step "go run ./examples/user -f examples/user/etc/user.yaml &"
"$work/user" -f examples/user/etc/user.yaml >"$work/user.log" 2>&1 &
pids+=($!)
registered() { "$work/zrpcctl" service list | grep -Eq '^user\.rpc +1 +1'; }
until_up "$!" 150 registered || fail "user.rpc did not register (its log is below: is port 8080 taken?)"

step "zrpcctl service list"
"$work/zrpcctl" service list

step "go run ./examples/user/cmd/userclient -id 1"
"$work/userclient" -id 1

step "go run ./examples/user/cmd/userclient -id 42"
if "$work/userclient" -id 42; then fail "user 42 was found"; fi

printf '\ndemo: done\n'
