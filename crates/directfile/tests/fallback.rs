//! The container case: io_uring denied by a seccomp filter (as Docker's default profile does).
//! A child process installs a filter that makes `io_uring_setup` fail with EPERM, and checks
//! that files still work on the thread pool and that the driver says why.

#![cfg(target_os = "linux")]

mod common;

use directfile::{Backend, BackendChoice, Driver, Error, OpenOptions};
use std::os::unix::process::CommandExt;
use std::process::Command;

const CHILD_ENV: &str = "DIRECTFILE_SECCOMP_CHILD";

/// Installs a seccomp filter: `io_uring_setup` → EPERM, everything else allowed.
fn deny_io_uring_setup() -> std::io::Result<()> {
    // BPF program: load the arch, kill on a foreign arch; load the syscall number; EPERM for
    // io_uring_setup; allow the rest.
    let nr = libc::SYS_io_uring_setup as u32;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 4,
        }, // ld [arch]
        libc::sock_filter {
            code: 0x15,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        }, // jeq arch, +1
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: nr,
        }, // jeq io_uring_setup
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points to `filter`, both alive for the call; the kernel copies them.
    if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn io_uring_denied_by_seccomp_falls_back_to_threads() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "io_uring_denied_by_seccomp_falls_back_to_threads",
        "--nocapture",
    ])
    .env(CHILD_ENV, "1")
    .env_remove("DIRECTFILE_BACKEND");
    // SAFETY: the closure only makes two prctl calls (async-signal-safe) between fork and exec.
    unsafe { cmd.pre_exec(deny_io_uring_setup) };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD OK"),
        "child did not run its checks:\n{stdout}\n{stderr}"
    );
}

/// Runs inside the filtered child.
fn child() {
    // The filter is really there: a raw io_uring_setup fails with EPERM.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads/writes a params struct of 120 bytes, which `params` is.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) };
    assert_eq!(ret, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );

    let driver = Driver::new().expect("auto falls back");
    assert_eq!(driver.backend(), Backend::Threads);
    let reason = driver.backend_reason();
    assert!(
        reason.contains("EPERM") || reason.contains("Operation not permitted"),
        "{reason}"
    );
    assert!(
        reason.contains("seccomp"),
        "the reason names the likely cause: {reason}"
    );

    let forced = Driver::builder().backend(BackendChoice::Uring).build();
    match forced {
        Err(Error::Unsupported(why)) => assert!(why.contains("io_uring"), "{why}"),
        other => panic!("forcing uring here must fail with the reason, got {other:?}"),
    }

    let dir = common::scratch_dir("seccomp");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .write_through(true)
        .driver(&driver)
        .open(dir.join("f"))
        .unwrap();
    let mut buf = file.alloc_buf(8192);
    buf.extend_from_slice(&[5u8; 8192]);
    futures::executor::block_on(async {
        let (n, buf) = file.write_at(buf, 4096).await;
        assert_eq!(n.unwrap(), 8192);
        file.sync_data().await.unwrap();
        let (n, buf) = file.read_at(buf, 4096).await;
        assert_eq!(n.unwrap(), 8192);
        assert!(buf.iter().all(|&b| b == 5));
    });
    println!("CHILD OK: {reason}");
}
