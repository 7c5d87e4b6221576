#!/usr/bin/env bash
# The integration tests of the file API under valgrind memcheck, on the thread-pool driver: no
# invalid access, no use of freed memory, no definite leak.
# - Thread pool only: valgrind runs one thread at a time and treats io_uring_enter as a call that
#   does not block, so the reaper waiting in it holds valgrind's lock and the process stalls
#   (seen here); the kernel's writes through the ring are invisible to memcheck anyway.
# - Debug build: LLVM's optimised enum loads read padding bytes in release builds, which
#   memcheck reports as uninitialised (a false positive, seen here).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cargo test -p directfile --test lifecycle --test file --test executors --test integrity --no-run
for test in lifecycle file executors integrity; do
  bin=$(ls -t target/debug/deps/ | grep -E "^${test}-[0-9a-f]+$" | head -1)
  for backend in threads; do
    echo "== valgrind: $test on $backend"
    DIRECTFILE_BACKEND=$backend valgrind --quiet --error-exitcode=1 --leak-check=full \
      --errors-for-leak-kinds=definite "target/debug/deps/$bin" --test-threads=1
  done
done
