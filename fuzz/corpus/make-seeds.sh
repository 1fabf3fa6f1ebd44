#!/bin/sh
# Writes the committed seed corpus of the fuzz targets: a few small inputs
# per target, named seed-*, in fuzz/corpus/<target>/. Run from anywhere;
# it rewrites the same files every time. Inputs that libFuzzer finds while
# fuzzing land beside them (named by their hash) and are not committed
# (fuzz/.gitignore).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
record="$here/record"
schedule="$here/schedule"
mkdir -p "$record" "$schedule"

# record: the lock-file formats `heldlock_fs::record::decode` meets.
owner=0f8fad5b-d9cb-469f-a165-70867728950e
printf '81234 %s 2026-11-27T10:57:20.123Z\n' "$owner" >"$record/seed-reference"
printf '81234 %s 2026-11-27T10:57:20.123Z host=db-1 stale_ms=30000 boot=a=b\n' "$owner" >"$record/seed-fields"
printf '81234 %s 2026-11-27T10:57:20Z\r\n' "$owner" >"$record/seed-crlf"
printf '81234 %s 2026-11-2' "$owner" >"$record/seed-partial"
printf '{"pid": 81234, "owner": "%s"}\n' "$owner" >"$record/seed-not-a-lock"

# schedule: 8 seed bytes (little-endian), the fault byte, then decisions
# (see fuzz_targets/schedule.rs: 0x00-0xEF is the boring choice, 0xF0-0xFF
# something happens; fault byte 0xF0-0xF5 one kind, 0xF6-0xFF all, else none).
decisions='\000\000\360\000\000\000\371\000\000\377\000\000\000\364\000\000\000\000\363\000\000\000\000\000\375\000\000\000\000\000\362\000'
printf '\052\000\000\000\000\000\000\000' >"$schedule/seed-no-faults"
printf '\000' >>"$schedule/seed-no-faults"
printf "$decisions" >>"$schedule/seed-no-faults"
n=0
for kind in crash pause long-pause io clock intruder; do
    # 0xF0 + n: 360 is octal for 0xF0.
    byte=$(printf '\\%03o' $((0360 + n)))
    printf '\236\000\000\000\000\000\000\000' >"$schedule/seed-$kind"
    printf "$byte" >>"$schedule/seed-$kind"
    printf "$decisions" >>"$schedule/seed-$kind"
    n=$((n + 1))
done
printf '\143\000\000\000\000\000\000\000' >"$schedule/seed-all-faults"
printf '\377' >>"$schedule/seed-all-faults"
printf "$decisions" >>"$schedule/seed-all-faults"
