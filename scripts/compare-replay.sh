#!/usr/bin/env bash
# Byte-for-byte comparison of two salespulse builds on the same replays:
# the Maven CRM data (with the example alert rules), a generated JSON
# stream with a checkpoint, a dirty copy of it (dead letters), and a
# generated protobuf stream. For a
# refactoring that must not change any output.
#
#   scripts/compare-replay.sh REV            # REV's build against the working tree's
#
# REV is built in a git worktree under $TMPDIR (release profile; its
# target directory is kept in $TMPDIR/salespulse-compare-target for the
# next time). Checkpoints are compared but for their `written_at` time
# and the checksum that covers it. Exits 1 on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: scripts/compare-replay.sh REV}"
tmp="${TMPDIR:-/tmp}"
wt="$tmp/salespulse-compare-$$"
target="$tmp/salespulse-compare-target"
git worktree add -f --detach "$wt" "$rev" >/dev/null
trap 'git worktree remove --force "$wt"' EXIT
(cd "$wt" && CARGO_TARGET_DIR="$target" cargo build --release --quiet)
cargo build --release --quiet
old="$target/release/salespulse"
new="$PWD/target/release/salespulse"
nofuture="$tmp/salespulse-compare-nofuture.toml"
# generated streams reach past today's date: no wall-clock guard
printf '[time]\nmax_future_skew = "0s"\n' > "$nofuture"
status=0
for side in old new; do
  bin="${!side}"
  d="$tmp/salespulse-compare-$side"
  rm -rf "$d" && mkdir -p "$d"
  "$bin" convert-maven tests/data/maven-crm > "$d/maven.jsonl" 2>/dev/null
  "$bin" run --input "$d/maven.jsonl" --output "$d/maven.out" \
    --dead-letter "$d/maven.dlq" --config examples/salespulse.toml 2>/dev/null
  "$bin" generate --events 300000 --seed 7 > "$d/gen.jsonl"
  "$bin" run --config "$nofuture" --input "$d/gen.jsonl" --output "$d/gen.out" \
    --dead-letter "$d/gen.dlq" --checkpoint "$d/gen.ckpt" 2>/dev/null
  # dirty input: every 10th line cut short, every 7th with its type misspelt
  head -50000 "$d/gen.jsonl" | awk 'NR%10==0{print substr($0,1,length($0)-5); next} NR%7==0{sub(/"crm\./,"\"crm_"); print; next} {print}' > "$d/dirty.jsonl"
  # (relative names: a dead letter says where it came from)
  (cd "$d" && "$bin" run --config "$nofuture" --input dirty.jsonl --output dirty.out \
    --dead-letter dirty.dlq 2>/dev/null)
  "$bin" generate --events 200000 --seed 9 --format protobuf > "$d/gen.pb"
  "$bin" run --config "$nofuture" --format protobuf --input "$d/gen.pb" \
    --output "$d/pb.out" --dead-letter "$d/pb.dlq" 2>/dev/null
done
o="$tmp/salespulse-compare-old"
n="$tmp/salespulse-compare-new"
for f in maven.jsonl maven.out gen.jsonl gen.out dirty.out dirty.dlq gen.pb pb.out maven.dlq gen.dlq pb.dlq; do
  if [ ! -e "$o/$f" ] && [ ! -e "$n/$f" ]; then
    echo "absent in both  $f"
  elif cmp -s "$o/$f" "$n/$f"; then
    echo "identical       $f ($(wc -c < "$n/$f") bytes)"
  else
    echo "DIFFERENT       $f"
    status=1
  fi
done
# checkpoint: the same but for written_at and the checksum over it
diffs=$(cmp -l "$o/gen.ckpt" "$n/gen.ckpt" | wc -l || true)
if [ "$(wc -c < "$o/gen.ckpt")" = "$(wc -c < "$n/gen.ckpt")" ] && [ "$diffs" -le 40 ]; then
  echo "same format     gen.ckpt ($diffs bytes differ: written_at and its checksum)"
else
  echo "DIFFERENT       gen.ckpt ($diffs bytes differ)"
  status=1
fi
exit $status
