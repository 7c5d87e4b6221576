#!/usr/bin/env bash
# windows-test.sh: build the workspace for Windows (x86_64-pc-windows-gnu) on a Debian 12
# machine and run its Windows suites under Wine. Sets the machine up on first use (as root,
# idempotent), so a fresh Debian 12 needs nothing else:
#   - Debian's rustc-web, cargo-web and rust-web-src: a stable compiler with its own std
#     sources, so `-Zbuild-std` builds std for the Windows target (rustup's toolchain has no
#     Windows std here and cannot download one; RUSTC_BOOTSTRAP=1 allows the flag);
#   - mingw-w64 (the linker) and Wine 8 (wine64, the runner);
#   - a stand-in bcryptprimitives.dll, which Wine 8 lacks: Rust's std imports ProcessPrng
#     from it, and without it every .exe fails to load (status c0000135);
#   - rust-web-clippy, Debian's clippy for that compiler (rustup's cannot check this target).
#
# Usage (from anywhere in the repository):
#   scripts/windows-test.sh            set up, then (what CI runs): the tests of `directfile`
#                                      (on the IOCP and the thread-pool drivers),
#                                      `directfile-journal` and the CLI, built by clippy-driver
#                                      (clippy for the Windows target, -D warnings);
#                                      `directfile`'s injected faults; a smoke run of
#                                      `directfile.exe` (probe, a 1 s bench on both drivers, a
#                                      1 s journal bench)
#   scripts/windows-test.sh setup      only the set-up
#   scripts/windows-test.sh cargo ARGS cargo for the Windows target with the runner set, e.g.
#                                      `cargo test --release -p directfile --test file`
#   scripts/windows-test.sh clippy ARGS clippy for the Windows target, e.g.
#                                      `clippy -p directfile --all-targets -- -D warnings`
#   scripts/windows-test.sh env        the environment it uses
#
# Build with --release, as CI does: the tests and the CLI then share one build of std and of
# every dependency.
#
# State lives in $DIRECTFILE_WINE_HOME (default ~/.cache/directfile-wine: the Wine prefix, the
# stand-in DLL, logs); builds in target/windows. What Wine can and cannot show of overlapped
# file I/O: crates/directfile/PLATFORMS.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${DIRECTFILE_WINE_HOME:-$HOME/.cache/directfile-wine}
target=x86_64-pc-windows-gnu
mkdir -p "$state"
log() { echo "windows-test: $*" >&2; }

setup() {
  if ! [ -x /usr/bin/cargo ] || ! dpkg -s rust-web-src rust-web-clippy wine64 gcc-mingw-w64-x86-64-win32 >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { log "the set-up installs Debian packages: run it as root once"; exit 1; }
    log "installing rustc-web, cargo-web, rust-web-src, rust-web-clippy, mingw-w64 and wine (once; log in $state/apt.log)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$state/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends rustc-web cargo-web rust-web-src rust-web-clippy \
      gcc-mingw-w64-x86-64-win32 wine64 wine >>"$state/apt.log" 2>&1 \
      || { tail -20 "$state/apt.log" >&2; exit 1; }
  fi
  use_debian_toolchain
  local v src
  v=$(rustc -V | awk '{print $2}')
  src=$(readlink -f "$(rustc --print sysroot)/lib/rustlib/src/rust")
  [ -f "$src/library/Cargo.lock" ] || { log "rust-web-src has no std sources at $src"; exit 1; }
  case "$src" in *"-$v") ;; *) log "std sources ($src) are not those of rustc $v"; exit 1 ;; esac
  if [ ! -f "$WINEPREFIX/system.reg" ]; then
    log "creating the Wine prefix (once)"
    wineboot --init >"$state/wineboot.log" 2>&1 || true
    wineserver -w
  fi
  local dll=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
  if [ ! -f /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/bcryptprimitives.dll ] && [ ! -f "$dll" ]; then
    log "building the bcryptprimitives.dll stand-in (once)"
    cat >"$state/bcryptprimitives.c" <<'C'
/* Stand-in for bcryptprimitives.dll, which Wine 8 lacks: ProcessPrng on BCryptGenRandom. */
#include <windows.h>
#include <bcrypt.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
C
    x86_64-w64-mingw32-gcc -O2 -shared -s -o "$dll" "$state/bcryptprimitives.c" -lbcrypt
  fi
}

# Debian's compiler, not rustup's (rustup's has no Windows std): ~/.cargo/bin stays out of PATH.
use_debian_toolchain() {
  export PATH=/usr/sbin:/usr/bin:/sbin:/bin
  export RUSTC_BOOTSTRAP=1
  export CARGO_TARGET_DIR=${DIRECTFILE_WINE_TARGET_DIR:-$repo/target/windows}
  export WINEPREFIX=$state/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
  # Line tables only (file:line in a failing test's backtrace), not the workspace's full
  # `debug = 1`: mingw's linker spends minutes on full debug info of every test binary.
  export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}
  # Test files go to the build's own disk (Wine maps / as drive Z:), not to a tmpfs.
  export DIRECTFILE_TEST_DIR=${DIRECTFILE_TEST_DIR:-$CARGO_TARGET_DIR/tmp}
  mkdir -p "$DIRECTFILE_TEST_DIR"
  unset DISPLAY WAYLAND_DISPLAY RUSTFLAGS
}

# A persistent wineserver with its helpers' output on /dev/null: otherwise the first test binary
# starts them and they hold its output pipe open (the harness then waits, or reports a leak).
start_wineserver() {
  wineserver -p >/dev/null 2>&1 </dev/null
  /usr/lib/wine/wine64 cmd /c exit >/dev/null 2>&1 </dev/null || true
  trap 'wineserver -k 2>/dev/null || true' EXIT
}

wcargo() {
  local sub=$1
  shift
  (cd "$repo" && cargo "$sub" -Zbuild-std --target "$target" "$@")
}

# Debian's clippy, called directly: `cargo clippy` would find rustup's cargo-clippy first
# (cargo looks in $CARGO_HOME/bin before PATH), whose toolchain has no Windows std.
wclippy() {
  (cd "$repo" && /usr/bin/cargo-clippy clippy -Zbuild-std --target "$target" --release "$@")
}

# directfile.exe's commands under Wine, in a directory of their own: probe, a 1 s bench on
# each Windows driver, a 1 s journal bench; each must succeed and leave nothing behind.
smoke() {
  local exe=$CARGO_TARGET_DIR/$target/release/directfile.exe
  local dir=$DIRECTFILE_TEST_DIR/cli-smoke
  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    local wine=$CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER
    "$wine" "$exe" probe
    "$wine" "$exe" bench --backend iocp --runtime 1s --size 16m --qd 8
    "$wine" "$exe" bench --backend threads --runtime 1s --size 16m --qd 8
    "$wine" "$exe" journal bench --runtime 1s --writers 4
  )
  if [ -n "$(ls -A "$dir")" ]; then
    log "the smoke run left files behind in $dir: $(ls -A "$dir")"
    exit 1
  fi
  rmdir "$dir"
}

# Runs a step and logs its wall time.
step() {
  local name=$1 began
  shift
  began=$(date +%s)
  "$@"
  log "$name: $(($(date +%s) - began)) s"
}

setup
case "${1:-all}" in
  setup) exit 0 ;;
  env)
    env | grep -E '^(PATH|RUSTC_BOOTSTRAP|CARGO_TARGET_DIR|CARGO_PROFILE_RELEASE_DEBUG|WINEPREFIX|WINEDEBUG|WINEDLLOVERRIDES|CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER|DIRECTFILE_TEST_DIR)='
    echo "rustc $(rustc -V | awk '{print $2}') ($(command -v rustc)), target $target"
    ;;
  cargo)
    shift
    start_wineserver
    wcargo "$@"
    ;;
  clippy)
    shift
    wclippy "$@"
    ;;
  all)
    start_wineserver
    start=$(date +%s)
    # Clippy in the same pass as the build: Debian's clippy-driver as the workspace's compiler
    # wrapper lints each member's lib, bins, tests and examples (every target there is: no
    # benches) while it compiles them, with the workspace's lints and -D warnings, and fails the
    # build on a warning. A separate `cargo clippy` would check std and every dependency a
    # second time, in check mode: 4 min of the CI's 30 on a busy host.
    export RUSTC_WORKSPACE_WRAPPER=/usr/bin/clippy-driver
    export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
    # Both Windows drivers run inside every `directfile` suite (tests/common lists iocp and
    # threads); the journal's suite runs on the default driver (IOCP). The CLI turns on the
    # library's features `tokio` and `async-io`, so these tests build (and lint)
    # the library with them: on Windows they must build nothing (the reactors are io_uring's),
    # and the suites run the futures on tokio and smol, woken by the driver's own threads.
    # Trimmed for Wine, where starting a process or doing I/O costs far more than on Linux:
    # the soak's default (200,000 operations per driver and executor) takes minutes, 50,000
    # keep its checks (flat memory, empty slot table, no handle leaked) within seconds; the
    # journal's kill test restarts a writer process per round (about 2 s each under Wine),
    # 20 rounds instead of 50.
    SOAK_OPS=${SOAK_OPS:-50000} SIGKILL_ROUNDS=${SIGKILL_ROUNDS:-20} step "tests" \
      wcargo test --release -p directfile -p directfile-journal -p directfile-cli
    step "injected faults" wcargo test --release -p directfile --features fault-injection --test faults
    step "directfile.exe smoke run" smoke
    log "Windows suites passed in $(($(date +%s) - start)) s"
    ;;
  *) sed -n 2,32p "$0"; exit 2 ;;
esac
