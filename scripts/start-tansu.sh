# Sourced by the benchmark and probe scripts: installs what is missing,
# starts a tansu broker (in memory) on a free port, stops it on exit.
# Sets `port` and `url` (tcp://127.0.0.1:$port).
./scripts/install-deps.sh
./scripts/install-tansu.sh
export PATH="$HOME/.cargo/bin:$PATH"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="tcp://127.0.0.1:$port"
tansu broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/ >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
